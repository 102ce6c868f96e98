"""RewriteConv2dToLUT on BlockBuilder-made Relax modules: structure, numerics, plan mismatches."""

import numpy as np
import pytest
import tvm
from tvm import relax

from lut_tvm import reference as ref
from lut_tvm.errors import PlanError
from lut_tvm.plan import LayerPlan, Plan
from lut_tvm.targets import host_cpu_flags
from lut_tvm.weights import LayerKind, fingerprint
from lut_tvm.testing import assert_no_near_ties, relax_module as make_module, run_relax as run, op_calls, lut_calls
from relay_passes.rewrite_conv2d_to_lut import RewriteConv2dToLUT
from schedules.lut_compute import Conv2dGeometry

from expected_kernels import emit_lut_conv2d


def conv_plan_layer(name, weight, sub_len, num_centroids=16, seed=0):
    depth = int(np.prod(weight.shape[1:]))
    centroids = np.random.default_rng(seed).standard_normal(
        (depth // sub_len, num_centroids, sub_len)).astype(np.float32)
    return LayerPlan(name, LayerKind.CONV2D, weight.shape, fingerprint(weight), centroids)


RNG = np.random.default_rng(7)
WC = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)  # planned, D = 27
WP = (RNG.standard_normal((5, 4, 1, 1)) * 0.5).astype(np.float32)  # 1x1, never planned
WG = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)  # grouped (groups = 2), D = 18

GEOMETRIES = [
    pytest.param((2, 3, 9, 7), (2, 2), (1, 0, 2, 1), (1, 1), id="stride2_asympad"),
    pytest.param((1, 3, 10, 8), (1, 1), (1, 0, 2, 1), (2, 2), id="dilation2_asympad"),
    pytest.param((1, 3, 11, 6), (2, 1), (0, 2, 1, 0), (2, 1), id="mixed"),
]


def conv_then_pointwise(strides, padding, dilation):
    def body(bb, x):
        conv = bb.emit(relax.op.nn.conv2d(x, relax.const(WC), strides, padding, dilation))
        return bb.emit(relax.op.nn.conv2d(conv, relax.const(WP)))

    return body


def pointwise_conv(x, weight):
    return np.einsum("nchw,oc->nohw", x, weight[:, :, 0, 0])


@pytest.mark.parametrize("input_shape,strides,padding,dilation", GEOMETRIES)
def test_planned_conv_replaced(input_shape, strides, padding, dilation):
    mod = make_module(input_shape, conv_then_pointwise(strides, padding, dilation))
    layer = conv_plan_layer("conv1", WC, sub_len=3)
    out = RewriteConv2dToLUT(Plan([layer]))(mod)

    convs = op_calls(out, "relax.nn.conv2d")
    assert len(convs) == 1 and np.array_equal(convs[0].args[1].value.numpy(), WP)
    calls = dict(lut_calls(out))
    assert sorted(calls) == ["encode_conv2d", "lookup_conv2d"] and len(lut_calls(out)) == 2

    x = np.random.default_rng(1).standard_normal(input_shape).astype(np.float32)
    rows, (batch, out_h, out_w) = ref.im2col_nchw(x, (3, 3), strides, padding, dilation)
    assert tuple(int(d) for d in calls["encode_conv2d"].ty.shape.values) == (batch, out_h, out_w, 9)
    assert tuple(int(d) for d in calls["lookup_conv2d"].ty.shape.values) == (batch, 4, out_h, out_w)
    assert_no_near_ties(rows, layer.centroids)
    lut = ref.lut_conv2d(x, layer.centroids, WC, None, strides, padding, dilation)
    got = run(out, x)
    assert got.shape == (batch, 5, out_h, out_w)
    np.testing.assert_allclose(got, pointwise_conv(lut, WP), rtol=1e-5, atol=1e-5)


def test_grouped_conv_is_left_to_the_grouped_pass():
    from relay_passes.rewrite_grouped_conv2d_to_lut import RewriteGroupedConv2dToLUT

    def body(bb, x):
        return bb.emit(relax.op.nn.conv2d(x, relax.const(WG), padding=(1, 1), groups=2))

    mod = make_module((1, 4, 6, 5), body)
    plan = Plan([conv_plan_layer("grouped", WG, sub_len=3)])  # the plan names it, still no LUT here
    tvm.ir.assert_structural_equal(RewriteConv2dToLUT(plan)(mod), mod)
    with pytest.raises(PlanError, match="'groups' is 1, but the model's conv has groups = 2"):
        RewriteGroupedConv2dToLUT(plan)(mod)


def test_unplanned_module_is_unchanged():
    mod = make_module((1, 3, 9, 7), conv_then_pointwise((1, 1), (1, 1, 1, 1), (1, 1)))
    plan = Plan([conv_plan_layer("elsewhere", np.ones_like(WC), sub_len=9)])
    tvm.ir.assert_structural_equal(RewriteConv2dToLUT(plan)(mod), mod)


def test_dense_plan_layers_do_not_touch_convs():
    """A dense layer whose [D, N] weight has the conv's bytes is a different fingerprint (shape)."""
    mod = make_module((1, 3, 9, 7), conv_then_pointwise((1, 1), (0, 0, 0, 0), (1, 1)))
    matrix = WC.reshape(4, 27).T.copy()
    centroids = np.zeros((9, 16, 3), np.float32)
    plan = Plan([LayerPlan("fc", LayerKind.DENSE, matrix.shape, fingerprint(matrix), centroids)])
    tvm.ir.assert_structural_equal(RewriteConv2dToLUT(plan)(mod), mod)


def _mismatched_plan():
    centroids = np.zeros((6, 16, 3), np.float32)  # D = 2*3*3 = 18 for the claimed shape
    return Plan([LayerPlan("conv1", LayerKind.CONV2D, (4, 2, 3, 3), fingerprint(WC), centroids)])


def test_weight_shape_mismatch_names_layer_and_field():
    mod = make_module((1, 3, 9, 7), conv_then_pointwise((1, 1), (0, 0, 0, 0), (1, 1)))
    with pytest.raises(PlanError) as err:
        RewriteConv2dToLUT(_mismatched_plan())(mod)
    message = str(err.value)
    assert "'conv1'" in message and "weight_shape" in message and "[4, 3, 3, 3]" in message


def test_weight_shape_mismatch_raises_plan_error():
    mod = make_module((1, 3, 9, 7), conv_then_pointwise((1, 1), (0, 0, 0, 0), (1, 1)))
    with pytest.raises(PlanError, match="conv1"):
        RewriteConv2dToLUT(_mismatched_plan())(mod)


AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
ARM64 = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
PLAIN = tvm.target.Target({"kind": "llvm"})
SHUFFLE_KINDS = ["encode_conv2d_rows", "lookup_conv2d_shuffle"]
GATHER_KINDS = ["encode_conv2d", "lookup_conv2d"]


def _rewrite_under(target, input_shape, out_channels, num_centroids=16, seed=0):
    """One planned 3x3 conv (padding 1) rewritten with ``target`` current; (module, plan layer, W)."""
    weight = np.random.default_rng(seed).standard_normal(
        (out_channels, input_shape[1], 3, 3)).astype(np.float32)
    layer = conv_plan_layer("conv", weight, sub_len=9, num_centroids=num_centroids, seed=seed)
    mod = make_module(input_shape, lambda bb, x: bb.emit(
        relax.op.nn.conv2d(x, relax.const(weight), padding=(1, 1, 1, 1))))
    with target:
        return RewriteConv2dToLUT(Plan([layer]))(mod), layer, weight


@pytest.mark.parametrize("target,input_shape,out_channels,num_centroids,expected", [
    pytest.param(AVX512, (1, 3, 9, 8), 16, 16, SHUFFLE_KINDS, id="avx512_72rows_O16"),
    pytest.param(AVX512, (3, 2, 5, 5), 48, 16, SHUFFLE_KINDS, id="avx512_batch3_O48"),
    pytest.param(AVX512, (1, 3, 7, 7), 16, 16, SHUFFLE_KINDS, id="avx512_49rows_below_64_lanes"),
    pytest.param(AVX512, (1, 3, 1, 3), 16, 16, GATHER_KINDS, id="avx512_3rows"),
    pytest.param(AVX512, (1, 3, 9, 8), 24, 16, SHUFFLE_KINDS, id="avx512_O24_not_multiple_of_16"),
    pytest.param(AVX512, (1, 3, 9, 8), 7, 16, SHUFFLE_KINDS, id="avx512_O7_prime"),
    pytest.param(AVX512, (1, 3, 9, 8), 16, 8, GATHER_KINDS, id="avx512_K8"),
    pytest.param(ARM64, (1, 3, 4, 4), 16, 16, SHUFFLE_KINDS, id="neon_16rows"),
    pytest.param(PLAIN, (1, 3, 9, 8), 16, 16, GATHER_KINDS, id="no_shuffle_target"),
])
def test_shuffle_or_gather_chosen_by_conditions(target, input_shape, out_channels, num_centroids,
                                                expected):
    """K = 16, N*OH*OW >= MIN_SHUFFLE_ROWS and a shuffle on the target (any O)."""
    out, _, _ = _rewrite_under(target, input_shape, out_channels, num_centroids)
    assert sorted(kind for kind, _ in lut_calls(out)) == expected
    calls = dict(lut_calls(out))
    rows = input_shape[0] * input_shape[2] * input_shape[3]
    if expected == SHUFFLE_KINDS:
        assert tuple(int(d) for d in calls["encode_conv2d_rows"].ty.shape.values) == (input_shape[1], rows)
    lookup = calls[expected[1]]
    assert tuple(int(d) for d in lookup.ty.shape.values) == (input_shape[0], out_channels, *input_shape[2:])


@pytest.mark.skipif("avx512bw" not in host_cpu_flags(), reason="CPU has no AVX-512BW")
def test_shuffle_conv_matches_reference():
    out, layer, weight = _rewrite_under(AVX512, (3, 2, 5, 5), 48, seed=3)
    x = np.random.default_rng(4).standard_normal((3, 2, 5, 5)).astype(np.float32)
    rows, _ = ref.im2col_nchw(x, (3, 3), padding=(1, 1, 1, 1))
    assert_no_near_ties(rows, layer.centroids)
    got = run(out, x, target=AVX512)
    want = ref.lut_conv2d(x, layer.centroids, weight, padding=(1, 1, 1, 1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_before_expected():
    """The planned conv becomes the window encode + NCHW lookup (gather form off-target); the
    unplanned pointwise conv stays."""
    input_shape, strides, padding, dilation = (2, 3, 9, 7), (2, 2), (1, 0, 2, 1), (1, 1)
    layer = conv_plan_layer("conv", WC, sub_len=3)
    geometry = Conv2dGeometry((3, 3), strides, padding, dilation)

    def expected_body(bb, x):
        conv = emit_lut_conv2d(bb, x, layer, WC, (input_shape, geometry))
        return bb.emit(relax.op.nn.conv2d(conv, relax.const(WP)))

    before = make_module(input_shape, conv_then_pointwise(strides, padding, dilation))
    after = RewriteConv2dToLUT(Plan([layer]))(before)
    tvm.ir.assert_structural_equal(after, make_module(input_shape, expected_body))
