"""RewriteDenseToExactLUT: a torch MLP quantized by an exact plan runs bit-identically to the
same quantized model written in torch (integer GEMM), and the dense matmuls are gone."""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.ir import Op

from lut_tvm._tvm_compat import build_executable, default_schedule_pass, make_target
from lut_tvm.errors import PlanError
from lut_tvm.exact import reference as ref
from lut_tvm.exact.plan import ExactLayerPlan, ExactPlan
from lut_tvm.weights import LayerKind
from lut_tvm.compiler import build_relax
from lut_tvm.targets import host_cpu_flags, resolve_target
from lut_tvm.testing import relax_module
from relay_passes.fuse_exact_bias import FuseExactBias
from relay_passes.rewrite_dense_to_exact_lut import RewriteDenseToExactLUT
from schedules.rules import default_rules
from schedules.rules.exact_lut import ExactLutRule

from expected_kernels import emit_exact_gather

torch = pytest.importorskip("torch")


def _module(w1, b1, w2, b2, input_shape):
    """``relu(x @ W1 + b1) @ W2 + b2`` as a Relax module with constant weights."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(input_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = bb.emit(relax.op.matmul(x, relax.const(w1)))
            h = bb.emit(relax.op.nn.relu(relax.op.add(h, relax.const(b1))))
            y = bb.emit(relax.op.matmul(h, relax.const(w2)))
            out = bb.emit_output(relax.op.add(y, relax.const(b2)))
        bb.emit_func_output(out)
    return bb.get()


def _build(mod):
    """Legalize, fuse, schedule with the exact-LUT rule first, build (the compiler's route)."""
    target = make_target({"kind": "llvm"})
    with target:
        mod = tvm.ir.transform.Sequential([
            relax.transform.LegalizeOps(), relax.transform.FuseOps(), relax.transform.FuseTIR(),
            default_schedule_pass([ExactLutRule(), *default_rules()]),
        ])(mod)
    return relax.VirtualMachine(build_executable(mod, target), tvm.cpu())


def _calls(mod, name):
    calls = []
    relax.analysis.post_order_visit(
        mod["main"].body,
        lambda e: calls.append(e) if isinstance(e, relax.Call) and isinstance(e.op, Op)
        and e.op.name == name else None)
    return calls


def _torch_quantized(x, layers, biases):
    """The quantized model in torch: int8 inputs, integer GEMM, float dequant, float bias."""
    h = torch.from_numpy(x)
    for index, ((layer, wq), bias) in enumerate(zip(layers, biases)):
        xq = torch.clamp(torch.round(h / torch.tensor(np.float32(layer.act_scale))), -127, 127)
        acc = xq.to(torch.int64) @ torch.from_numpy(wq.astype(np.int64))
        scale = torch.from_numpy(ref.output_scale(layer.act_scale, layer.w_scale))
        h = acc.to(torch.int32).to(torch.float32) * scale + torch.from_numpy(bias)
        if index == 0:
            h = torch.relu(h)
    return h.numpy()


@pytest.mark.parametrize("bits", [(2, 8), (5, 3)])
def test_mlp_equals_quantized_torch_model(bits):
    rng = np.random.default_rng(sum(bits))
    w1 = rng.standard_normal((23, 19)).astype(np.float32)
    w1[rng.random(w1.shape) < 0.8] = 0.0  # pruned
    w2 = rng.standard_normal((19, 7)).astype(np.float32)
    b1, b2 = rng.standard_normal(19).astype(np.float32), rng.standard_normal(7).astype(np.float32)
    x = rng.standard_normal((2, 3, 23)).astype(np.float32)
    calib = np.maximum(x.reshape(-1, 23) @ w1 + b1, 0)
    plan = ExactPlan([
        ExactLayerPlan.from_weight("fc1", LayerKind.DENSE, w1, bits[0],
                                   ref.calibrate_activation_scale(x[:1])),
        ExactLayerPlan.from_weight("fc2", LayerKind.DENSE, w2, bits[1],
                                   ref.calibrate_activation_scale(calib)),
    ])
    mod = RewriteDenseToExactLUT(plan)(_module(w1, b1, w2, b2, x.shape))
    assert not _calls(mod, "relax.matmul")
    kinds = [str(mod[c.args[0]].attrs["lut_tvm.kind"]) for c in _calls(mod, "relax.call_tir")]
    assert kinds == ["exact_lut_dense", "exact_lut_dense"]

    vm = _build(mod)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    layers = [(plan.layers[0], plan.layers[0].quantized_weight(w1)),
              (plan.layers[1], plan.layers[1].quantized_weight(w2))]
    want = _torch_quantized(x.reshape(-1, 23), layers, [b1, b2]).reshape(2, 3, 7)
    np.testing.assert_array_equal(got, want)


def test_unplanned_matmul_is_left_and_shape_mismatch_is_named():
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((8, 4)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    zeros4, zeros3 = np.zeros(4, np.float32), np.zeros(3, np.float32)
    plan = ExactPlan([ExactLayerPlan.from_weight("fc2", LayerKind.DENSE, w2, 4, 0.1)])
    mod = RewriteDenseToExactLUT(plan)(_module(w1, zeros4, w2, zeros3, (5, 8)))
    assert len(_calls(mod, "relax.matmul")) == 1 and len(_calls(mod, "relax.call_tir")) == 1
    plan.layers[0].weight_shape = (4, 4)
    with pytest.raises(Exception, match="weight_shape"):
        RewriteDenseToExactLUT(plan)(_module(w1, zeros4, w2, zeros3, (5, 8)))


@pytest.mark.skipif("avx2" not in host_cpu_flags(), reason="no AVX2")
@pytest.mark.parametrize("lookup", ["shuffle", "tmac"])
@pytest.mark.parametrize("bits", [2, 7])
def test_shuffle_form_with_folded_bias_equals_integer_reference(bits, lookup):
    """lookup="shuffle"/"tmac" + FuseExactBias: y = float32(acc + rint(b / out_scale)) * out_scale."""
    rng = np.random.default_rng(10 + bits)
    w1 = rng.standard_normal((70, 130)).astype(np.float32)  # 3 column blocks, 18 groups
    w1[:, 64:128] = 0.0  # a whole column block pruned
    w1[rng.random(w1.shape) < 0.5] = 0.0
    w2 = rng.standard_normal((130, 5)).astype(np.float32)
    b1, b2 = rng.standard_normal(130).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    x = rng.standard_normal((2, 9, 70)).astype(np.float32)
    plan = ExactPlan([ExactLayerPlan.from_weight("fc1", LayerKind.DENSE, w1, bits, 0.03),
                      ExactLayerPlan.from_weight("fc2", LayerKind.DENSE, w2, 9 - bits, 0.2)])
    target = resolve_target("native")
    with target:
        mod = tvm.transform.Sequential([RewriteDenseToExactLUT(plan, lookup), FuseExactBias()])(
            _module(w1, b1, w2, b2, x.shape))
    assert not _calls(mod, "relax.add") and not _calls(mod, "relax.matmul")
    kinds = {str(mod[c.args[0]].attrs["lut_tvm.kind"]) for c in _calls(mod, "relax.call_tir")}
    assert kinds == {"exact_tmac" if lookup == "tmac" else "exact_lut_shuffle"}
    got = relax.VirtualMachine(build_relax(mod, target), tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy()
    h = x.reshape(-1, 70)
    for index, (layer, weight, bias) in enumerate(zip(plan.layers, (w1, w2), (b1, b2))):
        out_scale = ref.output_scale(layer.act_scale, layer.w_scale)
        acc = ref.int_gemm(ref.quantize_activations(h, layer.act_scale),
                           layer.quantized_weight(weight))
        h = ref.dequantize(acc, out_scale, ref.quantize_bias(bias, out_scale), relu=index == 0)
    np.testing.assert_array_equal(got, h.reshape(2, 9, 5))


def test_before_expected_rows_and_reshape():
    """``x [2, 3, D] @ W`` becomes reshape to rows, the gather-form exact kernel (int32 bias zero),
    reshape back; the bias add after it stays (FuseExactBias's job)."""
    rng = np.random.default_rng(21)
    weight = rng.standard_normal((10, 6)).astype(np.float32)
    weight[rng.random(weight.shape) < 0.5] = 0.0
    bias = rng.standard_normal(6).astype(np.float32)
    layer = ExactLayerPlan.from_weight("fc", LayerKind.DENSE, weight, 3, 0.05)

    def before_body(bb, x):
        return bb.emit(relax.op.add(bb.emit(relax.op.matmul(x, relax.const(weight))), relax.const(bias)))

    def expected_body(bb, x):
        rows = bb.emit(relax.op.reshape(x, (6, 10)))
        out = emit_exact_gather(bb, rows, layer, weight, (6, 10))
        return bb.emit(relax.op.add(bb.emit(relax.op.reshape(out, (2, 3, 6))), relax.const(bias)))

    after = RewriteDenseToExactLUT(ExactPlan([layer]), "gather")(relax_module((2, 3, 10), before_body))
    tvm.ir.assert_structural_equal(after, relax_module((2, 3, 10), expected_body))


def test_piece_bits_other_than_bit_planes_refused():
    weight = np.random.default_rng(22).standard_normal((8, 4)).astype(np.float32)
    layer = ExactLayerPlan.from_weight("fc", LayerKind.DENSE, weight, 4, 0.1, piece_bits=2)
    with pytest.raises(PlanError, match=r"exact plan layer 'fc': field 'piece_bits' 2"):
        RewriteDenseToExactLUT(ExactPlan([layer]))(
            relax_module((5, 8), lambda bb, x: bb.emit(relax.op.matmul(x, relax.const(weight)))))
