"""RewriteConv2dToLUT: replace planned ``conv2d(x, const W)`` by encode + lookup/accumulate.

Before: ``FoldConstant`` has run; convs are NCHW/OIHW float32 with a constant weight. After:
for each conv whose weight fingerprint the plan names (groups = 1), the input is encoded
window by window (im2col order ``(c_in, kh, kw)``, no im2col buffer) into codes
``[N, OH, OW, C]`` and looked up straight into the NCHW output (bias zero; FuseLUTEpilogue
folds a following bias add / ReLU in). Other convs are left alone; grouped ones with a logged
reason.
"""

from __future__ import annotations

from tvm import relax
from tvm.ir import IRModule
from tvm.ir.transform import PassContext, module_pass

from lut_tvm.plan import Plan
from schedules.lut_kernels import encode_conv2d_func, lookup_conv2d_func

from .layer_sites import match_conv2d
from .lut_layer_builder import PlannedLayerRewriter, emit_encode, lookup_call, rewrite_relax_functions


def _emit_conv2d(builder, call: relax.Call, site, consts) -> relax.Expr:
    batch, _, height, width = site.input_shape
    out_h, out_w = site.geometry.output_hw(height, width)
    codes_shape = (batch, out_h, out_w, consts.num_codebooks)
    encode = encode_conv2d_func(site.input_shape, site.geometry, consts.num_codebooks,
                                consts.num_centroids, consts.sub_len)
    codes = emit_encode(builder, encode, "lut_encode_conv2d", call.args[0], consts, codes_shape)
    lookup = lookup_conv2d_func(codes_shape, consts.num_centroids, consts.out_features, relu=False)
    return lookup_call(builder.add_func(lookup, "lut_lookup_conv2d"), codes, consts,
                       (batch, consts.out_features, out_h, out_w))


@module_pass(opt_level=0, name="RewriteConv2dToLUT")
class RewriteConv2dToLUT:
    """Rewrite the plan's conv2d layers into LUT primitives."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        return rewrite_relax_functions(
            mod, PlannedLayerRewriter(mod, self.plan, match_conv2d, _emit_conv2d)
        )
