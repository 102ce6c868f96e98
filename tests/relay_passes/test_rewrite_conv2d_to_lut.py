"""RewriteConv2dToLUT on BlockBuilder-made Relax modules: structure, numerics, plan mismatches."""

import logging

import numpy as np
import pytest
import tvm
from tvm import relax

from lut_tvm import reference as ref
from lut_tvm.errors import PlanError
from lut_tvm.plan import LayerPlan, Plan
from lut_tvm.weights import LayerKind, fingerprint
from lut_tvm.testing import relax_module as make_module, run_relax as run, op_calls, lut_calls
from relay_passes.rewrite_conv2d_to_lut import RewriteConv2dToLUT


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
    assert ref.encode_margin(rows, layer.centroids).min() > 1e-4  # no near-ties in this data
    lut = ref.lut_conv2d(x, layer.centroids, WC, None, strides, padding, dilation)
    got = run(out, x)
    assert got.shape == (batch, 5, out_h, out_w)
    np.testing.assert_allclose(got, pointwise_conv(lut, WP), rtol=1e-5, atol=1e-5)


def test_grouped_conv_stays_dense(caplog):
    def body(bb, x):
        return bb.emit(relax.op.nn.conv2d(x, relax.const(WG), padding=(1, 1), groups=2))

    mod = make_module((1, 4, 6, 5), body)
    plan = Plan([conv_plan_layer("grouped", WG, sub_len=3)])  # the plan names it, still no LUT
    with caplog.at_level(logging.INFO, logger="lut_tvm.passes"):
        out = RewriteConv2dToLUT(plan)(mod)
    tvm.ir.assert_structural_equal(out, mod)
    assert "groups=2" in caplog.text


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
