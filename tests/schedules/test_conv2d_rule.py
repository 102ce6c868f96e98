"""The dense conv2d path (Conv2dWeightPacked + the Conv2dNCHW rule) against ONNX Runtime on odd shapes."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax, tirx

from lut_tvm import _tvm_compat
from lut_tvm.compiler import build_relax, legalize_passes
from lut_tvm.targets import host_cpu_flags
from relay_passes.conv2d_weight_packed import pack_weight
from schedules.rules.dense_ops import Conv2dNCHW, Matmul
from schedules.rules.dense_ops.conv2d_nchw import AVX2_REGISTERS, accumulator_budget, padded_channels, pick_conv_tiles
from schedules.rules.dense_ops.conv2d_nchw import positions_cap

AVX512 = {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}
AVX2 = {"kind": "llvm", "mcpu": "haswell", "num-cores": 2}
RUNNABLE = [
    pytest.param(AVX512, id="avx512", marks=pytest.mark.skipif(
        "avx512f" not in host_cpu_flags(), reason="CPU has no AVX-512")),
    pytest.param(AVX2, id="avx2", marks=pytest.mark.skipif(
        "avx2" not in host_cpu_flags(), reason="CPU has no AVX2")),
]

# (C_in, C_out, H, W, kernel, stride, padding (top, left, bottom, right), dilation, groups)
CASES = {
    "stride2_pad_c3": (3, 16, 17, 17, 3, 2, (1, 1, 1, 1), 1, 1),
    "1x1_odd_spatial_f24": (8, 24, 13, 13, 1, 1, (0, 0, 0, 0), 1, 1),
    "7x7_stem": (3, 32, 23, 23, 7, 2, (3, 3, 3, 3), 1, 1),
    "dilation2": (16, 40, 12, 12, 3, 1, (2, 2, 2, 2), 2, 1),
    "asymmetric_pad_f20": (12, 20, 9, 11, 3, 1, (0, 1, 2, 1), 1, 1),
    "1x1_stride2_f100": (16, 100, 14, 14, 1, 2, (0, 0, 0, 0), 1, 1),
    "3x3_deep_7x7": (64, 64, 7, 7, 3, 1, (1, 1, 1, 1), 1, 1),
    "groups2_5x5": (12, 64, 11, 11, 5, 1, (2, 2, 2, 2), 1, 2),
    "groups4_1x1_f34_per_group": (16, 136, 7, 7, 1, 1, (0, 0, 0, 0), 1, 4),
}


def _weights(c: int, f: int, k: int, seed: int):
    """OIHW weight ``[f, c, k, k]`` (``c`` = input channels per group) and bias, seeded."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, np.sqrt(2 / (c * k * k)), (f, c, k, k)).astype(np.float32)
    return weight, rng.normal(0, 0.1, f).astype(np.float32)


def _relax_conv(x_shape, weight, bias, stride, padding, dilation, groups) -> tvm.IRModule:
    """conv2d (constant OIHW weight) + bias + relu, as the frontends emit it."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            conv = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), strides=[stride, stride], padding=list(padding),
                                              dilation=[dilation, dilation], groups=groups))
            biased = bb.emit(relax.op.add(conv, relax.const(bias.reshape(1, -1, 1, 1))))
            out = bb.emit_output(relax.op.nn.relu(biased))
        bb.emit_func_output(out)
    return bb.get()


def _onnx_reference(x, weight, bias, stride, padding, dilation, groups) -> np.ndarray:
    """The same layer run by ONNX Runtime (ONNX pads are (top, left, bottom, right) for 2-D too)."""
    node = helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[stride, stride], pads=list(padding),
                            dilations=[dilation, dilation], group=groups)
    graph = helper.make_graph(
        [node, helper.make_node("Relu", ["c"], ["y"])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _param_ranks(func: tirx.PrimFunc) -> list[int]:
    """Rank of each buffer parameter, read from the function's signature."""
    signature = func.script().split("):")[0]
    return [shape.count("T.int64(") for shape in re.findall(r"T\.Buffer\(\((.*?)\), \"", signature)]


def _conv_funcs(mod: tvm.IRModule) -> list[tirx.PrimFunc]:
    return [f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc) and "conv2d" in gv.name_hint]


@pytest.mark.parametrize("target_spec", RUNNABLE)
@pytest.mark.parametrize("name", list(CASES))
def test_conv2d_matches_onnx_runtime(name, target_spec):
    c, f, h, w, k, stride, padding, dilation, groups = CASES[name]
    weight, bias = _weights(c // groups, f, k, seed=len(name))
    x = np.random.default_rng(1).normal(size=(1, c, h, w)).astype(np.float32)
    mod = _relax_conv(x.shape, weight, bias, stride, padding, dilation, groups)
    target = tvm.target.Target(target_spec)

    with target:
        legalized = tvm.transform.Sequential(legalize_passes())(mod)
    funcs = _conv_funcs(legalized)
    if not funcs:  # a 1x1 conv the packing pass turned into a matmul (tests/schedules/test_dense_pointwise_conv.py)
        funcs = [f for gv, f in legalized.functions_items() if "matmul" in gv.name_hint]
        assert k == 1 and len(funcs) == 1 and Matmul().apply(funcs[0], target, False) is not None
    else:
        assert len(funcs) == 1
        assert 5 in _param_ranks(funcs[0]), "the weight was not packed"
        assert Conv2dNCHW().apply(funcs[0], target, False) is not None, "the conv2d rule declined the packed conv"

    vm = _tvm_compat.virtual_machine(build_relax(mod, target))
    got = vm["main"](_tvm_compat.to_device(x)).numpy()
    want = _onnx_reference(x, weight, bias, stride, padding, dilation, groups)
    assert got.shape == want.shape
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("n_f, groups, block", [(24, 1, 8), (100, 1, 16), (64, 1, 32), (136, 4, 16), (64, 2, 32)])
def test_pack_weight_layout(n_f, groups, block):
    weight, _ = _weights(5, n_f, 3, seed=n_f)
    per_group = n_f // groups
    group_padded = -(-per_group // block) * block
    packed = pack_weight(weight, groups, group_padded, block)
    assert packed.shape == (groups * group_padded // block, 5, 3, 3, block)
    f = np.arange(groups * group_padded)
    expanded = packed[f // block, :, :, :, f % block].reshape(groups, group_padded, 5, 3, 3)
    np.testing.assert_array_equal(expanded[:, :per_group].reshape(weight.shape), weight)
    assert not expanded[:, per_group:].any()


@pytest.mark.parametrize("lanes", [8, 16])
@pytest.mark.parametrize("n_f, n_y, n_x", [(64, 56, 56), (256, 14, 14), (1008, 13, 13), (96, 55, 55), (48, 7, 7),
                                           (20, 9, 11)])
def test_pick_conv_tiles_fit(n_f, n_y, n_x, lanes):
    fr, yr, xr = pick_conv_tiles(n_f, n_y, n_x, lanes)
    assert n_f % fr == 0 and n_y % yr == 0 and n_x % xr == 0
    n_vec = -(-fr // lanes)
    assert yr * xr <= positions_cap(lanes, n_vec)
    # accumulators + weight vectors + one broadcast fit the registers (AVX2: 16; AVX-512: the 24-accumulator budget)
    assert (n_vec * yr * xr <= accumulator_budget(lanes) if lanes >= 16
            else n_vec * yr * xr + n_vec + 1 <= AVX2_REGISTERS)
    if n_f % lanes == 0:
        assert fr % lanes == 0  # whole vectors only


def test_padded_channels():
    assert padded_channels(1000, 16) == 1008
    assert padded_channels(64, 16) == 64
    assert padded_channels(20, 16) == 32  # whole vectors, even at 60% more channels
    assert padded_channels(7, 16) == 7  # under half a vector: left as it is
    assert padded_channels(24, 8) == 24


def test_depthwise_conv_is_not_packed_and_matches_onnx_runtime():
    """Depthwise convs (one output channel per group) stay with LegalizeOps' form and the fallback."""
    c, h, k = 24, 10, 3
    weight, bias = _weights(1, c, k, seed=3)
    x = np.random.default_rng(2).normal(size=(1, c, h, h)).astype(np.float32)
    mod = _relax_conv(x.shape, weight, bias, 1, (1, 1, 1, 1), 1, c)
    target = tvm.target.Target(RUNNABLE[0].values[0] if "avx512f" in host_cpu_flags() else {"kind": "llvm"})
    with target:
        legalized = tvm.transform.Sequential(legalize_passes())(mod)
    funcs = _conv_funcs(legalized)
    assert funcs and all(5 not in _param_ranks(f) for f in funcs)
    assert all(Conv2dNCHW().apply(f, target, False) is None for f in funcs)
    vm = _tvm_compat.virtual_machine(build_relax(mod, target))
    got = vm["main"](_tvm_compat.to_device(x)).numpy()
    want = _onnx_reference(x, weight, bias, 1, (1, 1, 1, 1), 1, c)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(np.abs(want).max()))
