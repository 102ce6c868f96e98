"""FoldBatchNorm: conv2d -> bias -> batch norm -> scale chains become one conv2d + bias (structurally,
with the NumPy-folded constants), models through torch.export and ONNX compile equal to torch /
ONNX Runtime, and chains it must not fold (a second user, training mode) are left alone."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tvm
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from tvm import relax

import lut_tvm
from lut_tvm._tvm_compat import constant_value
from lut_tvm.testing import op_calls, relax_module, run_relax
from relay_passes.fold_batch_norm import FoldBatchNorm, per_channel

RNG = np.random.default_rng(0)
F, C, EPS = 6, 4, 1e-3
W = RNG.normal(size=(F, C, 3, 3)).astype(np.float32)
BIAS = RNG.normal(size=(1, F, 1, 1)).astype(np.float32)
GAMMA, BETA, MEAN = (RNG.normal(size=F).astype(np.float32) for _ in range(3))
VAR = RNG.uniform(0.5, 2.0, F).astype(np.float32)
MUL = RNG.uniform(0.5, 1.5, (F, 1, 1)).astype(np.float32)


def _conv(x):
    return relax.op.nn.conv2d(x, relax.const(W), strides=2, padding=1)


def _bn(bb, y, training=False):
    bn = bb.emit(relax.op.nn.batch_norm(y, *(relax.const(v) for v in (GAMMA, BETA, MEAN, VAR)), axis=1,
                                        epsilon=EPS, training=training))
    return bb.emit(relax.TupleGetItem(bn, 0))


def _before(bb, x):
    biased = bb.emit(relax.op.add(bb.emit(_conv(x)), relax.const(BIAS)))
    return relax.op.nn.relu(bb.emit(relax.op.multiply(_bn(bb, biased), relax.const(MUL))))


def _numpy_folded():
    """Weight and bias of conv -> +BIAS -> batch norm -> *MUL, folded by hand in float64."""
    scale = GAMMA.astype(np.float64) / np.sqrt(VAR.astype(np.float64) + EPS) * MUL[:, 0, 0]
    shift = ((BIAS[0, :, 0, 0] - MEAN) * GAMMA / np.sqrt(VAR.astype(np.float64) + EPS) + BETA) * MUL[:, 0, 0]
    return W * scale[:, None, None, None], shift


def test_chain_becomes_conv_plus_bias_structurally():
    after = FoldBatchNorm()(relax_module((2, C, 9, 9), _before))
    weight, shift = _numpy_folded()
    (conv,) = op_calls(after, "relax.nn.conv2d")
    (add,) = op_calls(after, "relax.add")
    np.testing.assert_allclose(constant_value(conv.args[1]), weight, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(constant_value(add.args[1]), shift.reshape(1, F, 1, 1), rtol=1e-5, atol=1e-6)

    def expected(bb, x):  # the same graph with the constants the pass computed
        folded = bb.emit(relax.op.nn.conv2d(x, conv.args[1], strides=2, padding=1))
        return relax.op.nn.relu(bb.emit(relax.op.add(folded, add.args[1])))

    tvm.ir.assert_structural_equal(after, relax_module((2, C, 9, 9), expected))
    x = RNG.normal(size=(2, C, 9, 9)).astype(np.float32)
    want = run_relax(relax_module((2, C, 9, 9), _before), x)
    np.testing.assert_allclose(run_relax(after, x), want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_second_user_and_training_mode_are_not_folded():
    def shared(bb, x):  # the conv output is also read by the residual add
        conv = bb.emit(_conv(x))
        return relax.op.add(_bn(bb, conv), conv)

    def training(bb, x):
        return _bn(bb, bb.emit(_conv(x)), training=True)

    for body in (shared, training):
        before = relax_module((1, C, 8, 8), body)
        tvm.ir.assert_structural_equal(FoldBatchNorm()(before), before)


@pytest.mark.parametrize("value, want", [
    (np.ones((1, F, 1, 1)), np.ones(F)), (np.full((), 2.0), np.full(F, 2.0)), (np.ones((F, 1, 1)), np.ones(F)),
    (np.ones((1, F, 2, 1)), None), (np.ones((2, F, 1, 1)), None), (np.ones((F,)), None)])
def test_per_channel_constants(value, want):
    got = per_channel(value.astype(np.float32), F)
    assert (got is None) if want is None else np.array_equal(got, want)


class _ConvBnNet(nn.Module):
    """Conv (bias) -> BN -> ReLU, a 1x1 conv (no bias) -> BN, and a grouped strided conv -> BN."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 20, 3, padding=1), nn.BatchNorm2d(20), nn.ReLU(),
                                  nn.Conv2d(20, 24, 1, bias=False), nn.BatchNorm2d(24, eps=1e-3),
                                  nn.Conv2d(24, 24, 3, stride=2, padding=2, dilation=2, groups=4), nn.BatchNorm2d(24))
        for module in self.body:
            if isinstance(module, nn.BatchNorm2d):
                for tensor, low, high in ((module.weight, 0.5, 1.5), (module.bias, -0.5, 0.5),
                                          (module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2.0)):
                    tensor.data.uniform_(low, high)

    def forward(self, x):
        return self.body(x)


def test_torch_model_compiles_equal_to_torch():
    torch.manual_seed(0)
    model = _ConvBnNet().eval()
    x = np.random.default_rng(1).normal(size=(2, 3, 11, 13)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = lut_tvm.compile(model, None, example_inputs=(x,))
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = compiled(x)
    got = got[0] if isinstance(got, (list, tuple)) else got
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-4 * float(np.abs(want).max()))


def test_onnx_conv_bn_scale_shift_compiles_equal_to_onnx_runtime(tmp_path):
    """Inception v2's form: Conv (bias) -> BatchNormalization -> Mul -> Add (per-channel) -> Relu."""
    inits = {"w": W, "b": BIAS.ravel(), "g": GAMMA, "be": BETA, "m": MEAN, "v": VAR, "s": MUL, "t": -MUL}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["n"], epsilon=EPS),
             helper.make_node("Mul", ["n", "s"], ["ms"]), helper.make_node("Add", ["t", "ms"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    graph = helper.make_graph(nodes, "convbn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 15, 15])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, F, 8, 8])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    path = tmp_path / "convbn.onnx"
    path.write_bytes(model.SerializeToString())
    x = np.random.default_rng(2).normal(size=(1, C, 15, 15)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    compiled = lut_tvm.compile(str(path), None, example_inputs=(x,))
    got = compiled(x)
    got = got[0] if isinstance(got, (list, tuple)) else got
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-4 * float(np.abs(want).max()))


def test_chain_outside_a_dataflow_block_is_folded():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, C, 7, 7), "float32"))
    with bb.function("main", [x]):
        out = _bn(bb, bb.emit(_conv(x)))
        bb.emit_func_output(out)
    before = bb.get()
    after = FoldBatchNorm()(before)
    assert not op_calls(after, "relax.nn.batch_norm") and len(op_calls(after, "relax.add")) == 1
    x_value = RNG.normal(size=(1, C, 7, 7)).astype(np.float32)
    want = run_relax(before, x_value)
    np.testing.assert_allclose(run_relax(after, x_value), want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
