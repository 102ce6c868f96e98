"""RewriteDenseToLUT: replace planned ``matmul(x, const W)`` by encode + lookup/accumulate.

Before: ``FoldConstant`` has run, so dense layers read ``matmul(x, const W[D, N])`` (x of rank
>= 2). After: for each matmul whose weight fingerprint the plan names, ``x`` is reshaped to
``[M, D]``, encoded to uint8 codes ``[M, C]``, and looked up into ``[M, N]`` (bias zero; a
following bias add / ReLU is folded in by FuseLUTEpilogue). Other matmuls are left alone.
"""

from __future__ import annotations

import math

from tvm import relax
from tvm.ir import IRModule
from tvm.ir.transform import PassContext, module_pass
from tvm.relax.expr_functor import PyExprMutator, mutator

from lut_tvm.plan import Plan
from schedules.lut_kernels import encode_dense_func, lookup_dense_func

from .layer_sites import match_dense
from .lut_layer_builder import LutLayerConstants, emit_encode, lookup_call, rewrite_relax_functions


@mutator
class _DenseRewriter(PyExprMutator):
    def __init__(self, mod: IRModule, plan: Plan):
        super().__init__(mod)
        self.layers = plan.by_fingerprint()

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        site = match_dense(call)
        if site is None or site.fingerprint not in self.layers:
            return call
        consts = LutLayerConstants(site, self.layers[site.fingerprint])
        *lead, depth = site.input_shape
        rows = math.prod(lead)
        data = call.args[0]
        if len(lead) != 1:
            data = self.builder_.emit(relax.op.reshape(data, (rows, depth)))
        encode = encode_dense_func(rows, consts.num_codebooks, consts.num_centroids, consts.sub_len)
        codes = emit_encode(self.builder_, encode, "lut_encode_dense", data, consts,
                            (rows, consts.num_codebooks))
        lookup = lookup_dense_func(rows, consts.num_codebooks, consts.num_centroids,
                                   consts.out_features, relu=False)
        gvar = self.builder_.add_func(lookup, "lut_lookup_dense")
        out = lookup_call(gvar, codes, consts, (rows, consts.out_features))
        if len(lead) == 1:
            return out
        return relax.op.reshape(self.builder_.emit(out), (*lead, consts.out_features))


@module_pass(opt_level=0, name="RewriteDenseToLUT")
class RewriteDenseToLUT:
    """Rewrite the plan's dense layers into LUT primitives."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        return rewrite_relax_functions(mod, _DenseRewriter(mod, self.plan))
