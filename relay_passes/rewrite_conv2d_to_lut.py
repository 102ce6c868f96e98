"""RewriteConv2dToLUT: replace planned ``conv2d(x, const W)`` by encode + lookup/accumulate.

Before: ``FoldConstant`` has run; convs are NCHW/OIHW float32 with a constant weight. After:
for each conv whose weight fingerprint the plan names (groups = 1), the input is encoded
window by window (im2col order ``(c_in, kh, kw)``, no im2col buffer) and looked up straight
into the NCHW output (bias zero; FuseLUTEpilogue folds a following bias add / ReLU in). Where
the current target has a shuffle instruction and the layer suits it (``use_shuffle_lookup``
over the ``N * OH * OW`` output positions: K = 16 (32 / 64 with VBMI), rows >= ``MIN_SHUFFLE_ROWS``, any O), the
row encode writes codes ``[C, N*OH*OW]`` for the byte-shuffle lookup (tables ``[O, C, K]``);
else codes ``[N, OH, OW, C]`` go to the gather lookup (tables ``[C, K, O]``). Other convs are
left alone; grouped ones are ``rewrite_grouped_conv2d_to_lut``'s.
"""

from __future__ import annotations

from tvm import relax
from tvm.ir.transform import module_pass

from lut_tvm.plan import LayerPlan
from schedules.lut_conv_shuffle_compute import encode_conv2d_rows_func, lookup_conv2d_shuffle_func
from schedules.lut_kernels import encode_conv2d_func, lookup_conv2d_func

from .layer_sites import LayerSite, match_conv2d
from .lut_layer_builder import LutLayerConstants, emit_encode, lookup_call, use_shuffle_lookup
from .planned_rewriter import PlannedRewritePass


def _emit_conv2d_shuffle(builder, data, site: LayerSite, consts: LutLayerConstants, out_shape) -> relax.Expr:
    rows = out_shape[0] * out_shape[2] * out_shape[3]
    encode = encode_conv2d_rows_func(site.input_shape, site.geometry, consts.num_codebooks,
                                     consts.num_centroids, consts.sub_len)
    codes = emit_encode(builder, encode, "lut_encode_conv2d_rows", data, consts,
                        (consts.num_codebooks, rows))
    lookup = lookup_conv2d_shuffle_func(out_shape, consts.num_codebooks, num_centroids=consts.num_centroids)
    return lookup_call(builder, lookup, "lut_lookup_conv2d_shuffle", codes, consts, out_shape,
                       shuffle=True)


def _emit_conv2d_gather(builder, data, site: LayerSite, consts: LutLayerConstants, out_shape) -> relax.Expr:
    batch, _, out_h, out_w = out_shape
    codes_shape = (batch, out_h, out_w, consts.num_codebooks)
    encode = encode_conv2d_func(site.input_shape, site.geometry, consts.num_codebooks,
                                consts.num_centroids, consts.sub_len)
    codes = emit_encode(builder, encode, "lut_encode_conv2d", data, consts, codes_shape)
    lookup = lookup_conv2d_func(codes_shape, consts.num_centroids, consts.out_features, relu=False)
    return lookup_call(builder, lookup, "lut_lookup_conv2d", codes, consts, out_shape)


@module_pass(opt_level=0, name="RewriteConv2dToLUT")
class RewriteConv2dToLUT(PlannedRewritePass):
    """Rewrite the plan's conv2d layers into LUT primitives."""

    match = staticmethod(match_conv2d)

    def emit(self, builder: relax.BlockBuilder, call: relax.Call, site: LayerSite,
             layer: LayerPlan) -> relax.Expr:
        consts = LutLayerConstants(site, layer)
        batch, _, height, width = site.input_shape
        out_h, out_w = site.geometry.output_hw(height, width)
        out_shape = (batch, consts.out_features, out_h, out_w)
        if use_shuffle_lookup(batch * out_h * out_w, consts.num_centroids):
            return _emit_conv2d_shuffle(builder, call.args[0], site, consts, out_shape)
        return _emit_conv2d_gather(builder, call.args[0], site, consts, out_shape)
