"""FuseExactBias: a constant channel bias after an exact kernel (through its reshape / permute_dims)
becomes the kernel's int32 bias ``rint(b / out_scale)``; anything else is left as it is."""

import numpy as np
import tvm
from tvm import relax

from lut_tvm.exact.plan import ExactLayerPlan, ExactPlan
from lut_tvm.testing import relax_module
from lut_tvm.weights import LayerKind, as_dense_matrix
from relay_passes.fuse_exact_bias import FuseExactBias
from relay_passes.rewrite_conv2d_to_exact_lut import RewriteConv2dToExactLUT
from relay_passes.rewrite_dense_to_exact_lut import RewriteDenseToExactLUT
from schedules.lut_compute import Conv2dGeometry

from expected_kernels import emit_exact_gather

RNG = np.random.default_rng(31)
W = RNG.standard_normal((10, 6)).astype(np.float32)
B = RNG.standard_normal(6).astype(np.float32)
WC = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
BC = RNG.standard_normal(4).astype(np.float32)
DENSE = ExactLayerPlan.from_weight("fc", LayerKind.DENSE, W, 4, 0.05)
CONV = ExactLayerPlan.from_weight("conv", LayerKind.CONV2D, WC, 5, 0.03)
CONV_IN = (1, 3, 7, 6)


def _dense_before(bias):
    return RewriteDenseToExactLUT(ExactPlan([DENSE]), "gather")(relax_module((2, 3, 10), lambda bb, x: bb.emit(
        relax.op.add(relax.const(bias), bb.emit(relax.op.matmul(x, relax.const(W)))))))


def test_dense_before_expected():
    """``b + reshape(kernel)`` becomes ``reshape(kernel with bias_q)``; the add is gone."""
    def expected_body(bb, x):
        rows = bb.emit(relax.op.reshape(x, (6, 10)))
        out = emit_exact_gather(bb, rows, DENSE, W, (6, 10), bias=B)
        return bb.emit(relax.op.reshape(out, (2, 3, 6)))

    tvm.ir.assert_structural_equal(FuseExactBias()(_dense_before(B)), relax_module((2, 3, 10), expected_body))


def test_conv_before_expected():
    """Through reshape to NHWC and permute_dims to NCHW, a ``[1, O, 1, 1]`` bias is a channel bias;
    the layout ops are re-emitted on the new kernel call and the ReLU stays."""
    geometry = Conv2dGeometry((3, 3), (1, 1), (1, 1, 1, 1))
    before = RewriteConv2dToExactLUT(ExactPlan([CONV]), "gather")(relax_module(CONV_IN, lambda bb, x: bb.emit(
        relax.op.nn.relu(bb.emit(relax.op.add(
            bb.emit(relax.op.nn.conv2d(x, relax.const(WC), padding=(1, 1))),
            relax.const(BC.reshape(1, 4, 1, 1))))))))

    def expected_body(bb, x):
        rows = emit_exact_gather(bb, x, CONV, as_dense_matrix(LayerKind.CONV2D, WC), CONV_IN, geometry, bias=BC)
        nhwc = bb.emit(relax.op.reshape(rows, (1, 7, 6, 4)))
        return bb.emit(relax.op.nn.relu(bb.emit(relax.op.permute_dims(nhwc, [0, 3, 1, 2]))))

    tvm.ir.assert_structural_equal(FuseExactBias()(before), relax_module(CONV_IN, expected_body))


def test_bias_along_rows_is_left():
    """A bias varying along a row axis (``[3, 1]`` over ``[2, 3, 6]``) is no channel bias: unchanged."""
    before = _dense_before(RNG.standard_normal((3, 1)).astype(np.float32))
    tvm.ir.assert_structural_equal(FuseExactBias()(before), before)


def test_kernel_with_a_second_use_is_left():
    """The bias is not folded when the kernel's result is used elsewhere too."""
    before = RewriteDenseToExactLUT(ExactPlan([DENSE]), "gather")(relax_module((6, 10), lambda bb, x: bb.emit(
        relax.op.multiply(*[bb.emit(relax.op.add(y, relax.const(B)))
                            for y in [bb.emit(relax.op.matmul(x, relax.const(W)))] * 2]))))
    tvm.ir.assert_structural_equal(FuseExactBias()(before), before)
