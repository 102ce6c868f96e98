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

from lut_tvm.plan import Plan
from schedules.lut_kernels import encode_dense_func, lookup_dense_func

from .layer_sites import match_dense
from .lut_layer_builder import PlannedLayerRewriter, emit_encode, lookup_call, rewrite_relax_functions


def _emit_dense(builder, call: relax.Call, site, consts) -> relax.Expr:
    *lead, depth = site.input_shape
    rows = math.prod(lead)
    data = call.args[0]
    if len(lead) != 1:
        data = builder.emit(relax.op.reshape(data, (rows, depth)))
    encode = encode_dense_func(rows, consts.num_codebooks, consts.num_centroids, consts.sub_len)
    codes = emit_encode(builder, encode, "lut_encode_dense", data, consts, (rows, consts.num_codebooks))
    lookup = lookup_dense_func(rows, consts.num_codebooks, consts.num_centroids,
                               consts.out_features, relu=False)
    out = lookup_call(builder.add_func(lookup, "lut_lookup_dense"), codes, consts,
                      (rows, consts.out_features))
    if len(lead) == 1:
        return out
    return relax.op.reshape(builder.emit(out), (*lead, consts.out_features))


@module_pass(opt_level=0, name="RewriteDenseToLUT")
class RewriteDenseToLUT:
    """Rewrite the plan's dense layers into LUT primitives."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        return rewrite_relax_functions(
            mod, PlannedLayerRewriter(mod, self.plan, match_dense, _emit_dense)
        )
