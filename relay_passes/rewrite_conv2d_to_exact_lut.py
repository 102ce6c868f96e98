"""RewriteConv2dToExactLUT: replace planned ``conv2d(x, const W)`` by LUT-NA's exact LUT kernel.

Before: ``FoldConstant`` has run; convs are NCHW/OIHW float32 with a constant weight (any
stride, padding, dilation; groups = 1, as ``layer_sites.match_conv2d`` accepts). After: for
each conv whose weight fingerprint the exact plan names, one ``call_tir`` reads the input's
im2col windows (order ``(c_in, kh, kw)``, the ``weights.as_dense_matrix`` order; padding reads
0) straight from NCHW, quantizes them to int8 with the plan's ``act_scale``, computes the
integer GEMM with ``Wq [C*kh*kw, O]`` exactly by bit-plane look-ups and dequantizes it to
``[N*OH*OW, O]`` (one float32 multiply); a ``reshape`` + ``permute_dims`` give NCHW back. The
graph's bias add and ReLU stay after it. The look-up form (``lookup``) is chosen as in
``RewriteDenseToExactLUT``. Other convs are left alone.
"""

from __future__ import annotations

from tvm import relax
from tvm.ir.transform import module_pass

from lut_tvm.exact.plan import ExactLayerPlan

from .exact_layer_builder import ExactRewritePass, emit_exact_layer
from .layer_sites import LayerSite, match_conv2d


@module_pass(opt_level=0, name="RewriteConv2dToExactLUT")
class RewriteConv2dToExactLUT(ExactRewritePass):
    """Rewrite the exact plan's conv2d layers into exact (LUT-NA) LUT kernels."""

    match = staticmethod(match_conv2d)

    def emit(self, builder: relax.BlockBuilder, call: relax.Call, site: LayerSite,
             layer: ExactLayerPlan) -> relax.Expr:
        batch, _, height, width = site.input_shape
        out_h, out_w = site.geometry.output_hw(height, width)
        rows = emit_exact_layer(builder, call.args[0], site, layer, site.input_shape, self.lookup)
        channels = int(site.weight.shape[0])
        nhwc = builder.emit(relax.op.reshape(builder.emit(rows), (batch, out_h, out_w, channels)))
        return relax.op.permute_dims(nhwc, [0, 3, 1, 2])
