"""RewriteConv2dToExactLUT + FuseExactBias: planned convs (odd H/W, stride 2, padding, dilation)
become one exact kernel each, the bias folds into its int32 bias, and the built module equals
the NumPy integer conv reference bit for bit in both look-up forms."""

import numpy as np
import pytest
import tvm
from tvm import relax

from lut_tvm.compiler import build_relax
from lut_tvm.errors import PlanError
from lut_tvm.exact import reference as ref
from lut_tvm.exact.conv_reference import dequantize_nchw, int_conv2d
from lut_tvm.exact.plan import ExactLayerPlan, ExactPlan
from lut_tvm.targets import host_cpu_flags, resolve_target
from lut_tvm.testing import lut_calls, op_calls, relax_module
from lut_tvm.weights import LayerKind, as_dense_matrix
from relay_passes.fuse_exact_bias import FuseExactBias
from relay_passes.rewrite_conv2d_to_exact_lut import RewriteConv2dToExactLUT
from schedules.lut_compute import Conv2dGeometry

from expected_kernels import emit_exact_gather

SHAPE = (2, 3, 11, 9)
CONVS = [  # (weight OIHW, strides, padding (t, l, b, r), dilation)
    ((6, 3, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    ((5, 6, 3, 2), (1, 1), (2, 1, 0, 1), (2, 1)),
]


def _weights(rng):
    weights = []
    for shape, *_ in CONVS:
        weight = rng.standard_normal(shape).astype(np.float32)
        weight[:, :1] = 0.0  # a pruned input channel: whole zero groups
        weights.append((weight, rng.standard_normal(shape[0]).astype(np.float32)))
    return weights


def _module(weights):
    def body(bb, x):
        h = x
        for (weight, bias), (_, strides, padding, dilation) in zip(weights, CONVS):
            h = bb.emit(relax.op.nn.conv2d(h, relax.const(weight), strides, padding, dilation))
            h = bb.emit(relax.op.add(h, relax.const(bias.reshape(1, -1, 1, 1))))
            h = bb.emit(relax.op.nn.relu(h))
        return h

    return relax_module(SHAPE, body)


def _reference(x, weights, plan):
    h = x
    for (weight, bias), (_, strides, padding, dilation), layer in zip(weights, CONVS, plan.layers):
        wq = layer.quantized_weight(weight).T.reshape(weight.shape)
        out_scale = ref.output_scale(layer.act_scale, layer.w_scale)
        acc = int_conv2d(ref.quantize_activations(h, layer.act_scale), wq, strides,
                         padding, dilation)
        h = dequantize_nchw(acc, out_scale, ref.quantize_bias(bias, out_scale), relu=True)
    return h


LOOKUPS = [
    pytest.param("gather", {"kind": "llvm"}, id="gather"),
    pytest.param("shuffle", "native", id="shuffle", marks=pytest.mark.skipif(
        "avx2" not in host_cpu_flags(), reason="no AVX2")),
]


@pytest.mark.parametrize("lookup, target", LOOKUPS)
def test_convs_equal_integer_reference(lookup, target):
    rng = np.random.default_rng(1)
    weights = _weights(rng)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    plan = ExactPlan([
        ExactLayerPlan.from_weight("conv1", LayerKind.CONV2D, weights[0][0], 3, 0.02),
        ExactLayerPlan.from_weight("conv2", LayerKind.CONV2D, weights[1][0], 7, 0.1),
    ])
    mod = tvm.transform.Sequential([RewriteConv2dToExactLUT(plan, lookup), FuseExactBias()])(
        _module(weights))
    assert not op_calls(mod, "relax.nn.conv2d") and not op_calls(mod, "relax.add")
    assert [kind for kind, _ in lut_calls(mod)] == [f"exact_lut_{'dense' if lookup == 'gather' else 'shuffle'}"] * 2
    tvm_target = resolve_target(target)
    vm = relax.VirtualMachine(build_relax(mod, tvm_target), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, _reference(x, weights, plan))


def test_auto_lookup_follows_the_target():
    rng = np.random.default_rng(2)
    weights = _weights(rng)
    plan = ExactPlan([ExactLayerPlan.from_weight("conv1", LayerKind.CONV2D, weights[0][0], 4, 0.1)])
    kinds = {}
    for name, target in (("plain", {"kind": "llvm"}), ("arm", "arm64")):
        with resolve_target(target):
            mod = RewriteConv2dToExactLUT(plan)(_module(weights))
        kinds[name] = [kind for kind, _ in lut_calls(mod)]
    assert kinds == {"plain": ["exact_lut_dense"], "arm": ["exact_tmac"]}  # NEON: the T-MAC form


def test_kind_mismatch_is_named():
    rng = np.random.default_rng(3)
    weights = _weights(rng)
    layer = ExactLayerPlan.from_weight("conv1", LayerKind.CONV2D, weights[0][0], 4, 0.1)
    layer.kind = LayerKind.DENSE
    layer.weight_shape = weights[0][0].shape
    with pytest.raises(PlanError, match="'conv1'.*'kind'"):
        RewriteConv2dToExactLUT(ExactPlan([layer]))(_module(weights))


def test_before_expected():
    """A planned conv becomes the gather-form exact kernel on NCHW input (rows ``[N*OH*OW, O]``),
    then reshape to NHWC and permute_dims back to NCHW; its bias add and ReLU stay."""
    weights = _weights(np.random.default_rng(4))[:1]
    (weight, bias), (_, strides, padding, dilation) = weights[0], CONVS[0]
    layer = ExactLayerPlan.from_weight("conv1", LayerKind.CONV2D, weight, 3, 0.02)
    geometry = Conv2dGeometry(tuple(weight.shape[2:]), strides, padding, dilation)
    out_h, out_w = geometry.output_hw(*SHAPE[2:])

    def expected_body(bb, x):
        rows = emit_exact_gather(bb, x, layer, as_dense_matrix(LayerKind.CONV2D, weight), SHAPE, geometry)
        nhwc = bb.emit(relax.op.reshape(rows, (SHAPE[0], out_h, out_w, weight.shape[0])))
        h = bb.emit(relax.op.permute_dims(nhwc, [0, 3, 1, 2]))
        h = bb.emit(relax.op.add(h, relax.const(bias.reshape(1, -1, 1, 1))))
        return bb.emit(relax.op.nn.relu(h))

    after = RewriteConv2dToExactLUT(ExactPlan([layer]), "gather")(_module(weights))
    tvm.ir.assert_structural_equal(after, relax_module(SHAPE, expected_body))
