"""RewriteConv2dToLUT: replace planned ``conv2d(x, const W)`` by encode + lookup/accumulate.

Before: ``FoldConstant`` has run; convs are NCHW/OIHW float32 with a constant weight. After:
for each conv whose weight fingerprint the plan names (groups = 1), the input is encoded
window by window (im2col order ``(c_in, kh, kw)``, no im2col buffer) and looked up straight
into the NCHW output (bias zero; FuseLUTEpilogue folds a following bias add / ReLU in). Where
the current target has a shuffle instruction and the layer suits it (``use_shuffle_lookup``
over the ``N * OH * OW`` output positions: K = 16 (32 / 64 with VBMI), O % 16 == 0, rows >= shuffle lanes), the
row encode writes codes ``[C, N*OH*OW]`` for the byte-shuffle lookup (tables ``[O, C, K]``);
else codes ``[N, OH, OW, C]`` go to the gather lookup (tables ``[C, K, O]``). Other convs are
left alone; grouped ones with a logged reason.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.ir import IRModule
from tvm.ir.transform import PassContext, module_pass

from lut_tvm.plan import Plan
from schedules.lut_conv_shuffle_compute import encode_conv2d_rows_func, lookup_conv2d_shuffle_func
from schedules.lut_kernels import encode_conv2d_func, lookup_conv2d_func

from .layer_sites import match_conv2d
from .lut_layer_builder import PlannedLayerRewriter, emit_encode, lookup_call, rewrite_relax_functions
from .rewrite_dense_to_lut import use_shuffle_lookup


def _emit_conv2d_shuffle(builder, call: relax.Call, site, consts, out_shape) -> relax.Expr:
    rows = out_shape[0] * out_shape[2] * out_shape[3]
    encode = encode_conv2d_rows_func(site.input_shape, site.geometry, consts.num_codebooks,
                                     consts.num_centroids, consts.sub_len)
    codes = emit_encode(builder, encode, "lut_encode_conv2d_rows", call.args[0], consts,
                        (consts.num_codebooks, rows))
    lookup = lookup_conv2d_shuffle_func(out_shape, consts.num_codebooks,
                                        num_centroids=consts.num_centroids)
    table = relax.const(np.ascontiguousarray(consts.tables_q.transpose(2, 0, 1)))
    return relax.call_tir(builder.add_func(lookup, "lut_lookup_conv2d_shuffle"),
                          [codes, table, consts.scale, consts.bias],
                          relax.TensorType(out_shape, "float32"))


def _emit_conv2d(builder, call: relax.Call, site, consts) -> relax.Expr:
    batch, _, height, width = site.input_shape
    out_h, out_w = site.geometry.output_hw(height, width)
    out_shape = (batch, consts.out_features, out_h, out_w)
    if use_shuffle_lookup(batch * out_h * out_w, consts):
        return _emit_conv2d_shuffle(builder, call, site, consts, out_shape)
    codes_shape = (batch, out_h, out_w, consts.num_codebooks)
    encode = encode_conv2d_func(site.input_shape, site.geometry, consts.num_codebooks,
                                consts.num_centroids, consts.sub_len)
    codes = emit_encode(builder, encode, "lut_encode_conv2d", call.args[0], consts, codes_shape)
    lookup = lookup_conv2d_func(codes_shape, consts.num_centroids, consts.out_features, relu=False)
    return lookup_call(builder.add_func(lookup, "lut_lookup_conv2d"), codes, consts, out_shape)


@module_pass(opt_level=0, name="RewriteConv2dToLUT")
class RewriteConv2dToLUT:
    """Rewrite the plan's conv2d layers into LUT primitives."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        return rewrite_relax_functions(
            mod, PlannedLayerRewriter(mod, self.plan, match_conv2d, _emit_conv2d)
        )
