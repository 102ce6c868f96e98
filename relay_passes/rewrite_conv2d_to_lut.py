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
from tvm.relax.expr_functor import PyExprMutator, mutator

from lut_tvm.plan import Plan
from schedules.lut_kernels import encode_conv2d_func, lookup_conv2d_func

from .layer_sites import match_conv2d
from .lut_layer_builder import LutLayerConstants, emit_encode, lookup_call, rewrite_relax_functions


@mutator
class _Conv2dRewriter(PyExprMutator):
    def __init__(self, mod: IRModule, plan: Plan):
        super().__init__(mod)
        self.layers = plan.by_fingerprint()

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        site = match_conv2d(call)
        if site is None or site.fingerprint not in self.layers:
            return call
        consts = LutLayerConstants(site, self.layers[site.fingerprint])
        batch, _, height, width = site.input_shape
        out_h, out_w = site.geometry.output_hw(height, width)
        codes_shape = (batch, out_h, out_w, consts.num_codebooks)
        encode = encode_conv2d_func(site.input_shape, site.geometry, consts.num_codebooks,
                                    consts.num_centroids, consts.sub_len)
        codes = emit_encode(self.builder_, encode, "lut_encode_conv2d", call.args[0], consts,
                            codes_shape)
        lookup = lookup_conv2d_func(codes_shape, consts.num_centroids, consts.out_features,
                                    relu=False)
        gvar = self.builder_.add_func(lookup, "lut_lookup_conv2d")
        return lookup_call(gvar, codes, consts, (batch, consts.out_features, out_h, out_w))


@module_pass(opt_level=0, name="RewriteConv2dToLUT")
class RewriteConv2dToLUT:
    """Rewrite the plan's conv2d layers into LUT primitives."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        return rewrite_relax_functions(mod, _Conv2dRewriter(mod, self.plan))
