"""RewriteDenseToLUT: replace planned ``matmul(x, const W)`` by encode + lookup/accumulate.

Before: ``FoldConstant`` has run, so dense layers read ``matmul(x, const W[D, N])`` (x of rank
>= 2). After: for each matmul whose weight fingerprint the plan names, ``x`` is reshaped to
``[M, D]``, encoded to uint8 codes, and looked up into ``[M, N]`` (bias zero; a following bias
add / ReLU is folded in by FuseLUTEpilogue). Where the current target has a shuffle
instruction and the shape suits it (``use_shuffle_lookup``), the row-vectorized encode writes
the codes codebook-major ``[C, M]`` and the byte-shuffle lookup reads them (tables
``[N, C, K]``); else the encode writes codes ``[M, C]`` for the row-gather lookup (tables
``[C, K, N]``). Other matmuls are left alone.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.ir import IRModule
from tvm.ir.transform import PassContext, module_pass

from lut_tvm.plan import Plan
from schedules.intrin.lut_vbmi import LOOKUP_LANES, lookup_intrin_for_target
from schedules.lut_encode_rows_compute import encode_dense_rows_func
from schedules.lut_kernels import encode_dense_func, lookup_dense_func
from schedules.lut_shuffle_compute import lookup_dense_shuffle_func

from .layer_sites import match_dense
from .lut_layer_builder import PlannedLayerRewriter, emit_encode, lookup_call, rewrite_relax_functions


def use_shuffle_lookup(rows: int, consts) -> bool:
    """Whether the byte-shuffle lookup serves this layer on the current target.

    It needs a target with a lookup intrinsic for the layer's K (a 16-byte shuffle for K = 16,
    AVX-512 VBMI ``vpermb`` for K = 32 / 64), at least one register of rows, and N divisible by 16 (the kernel's channel tile
    must divide N).
    """
    target = tvm.target.Target.current(allow_none=True)
    intrin = lookup_intrin_for_target(target, consts.num_centroids) if target is not None else None
    return (
        intrin is not None
        and rows >= LOOKUP_LANES[intrin]
        and consts.out_features % 16 == 0
    )


def _emit_dense(builder, call: relax.Call, site, consts) -> relax.Expr:
    *lead, depth = site.input_shape
    rows = math.prod(lead)
    data = call.args[0]
    if len(lead) != 1:
        data = builder.emit(relax.op.reshape(data, (rows, depth)))
    out_ty = relax.TensorType((rows, consts.out_features), "float32")
    if use_shuffle_lookup(rows, consts):
        encode = encode_dense_rows_func(rows, consts.num_codebooks, consts.num_centroids,
                                        consts.sub_len)
        codes_by_codebook = emit_encode(builder, encode, "lut_encode_dense_rows", data, consts,
                                        (consts.num_codebooks, rows))
        lookup = lookup_dense_shuffle_func(rows, consts.num_codebooks, consts.out_features,
                                           num_centroids=consts.num_centroids)
        table = relax.const(np.ascontiguousarray(consts.tables_q.transpose(2, 0, 1)))
        out = relax.call_tir(builder.add_func(lookup, "lut_lookup_dense_shuffle"),
                             [codes_by_codebook, table, consts.scale, consts.bias], out_ty)
    else:
        encode = encode_dense_func(rows, consts.num_codebooks, consts.num_centroids,
                                   consts.sub_len)
        codes = emit_encode(builder, encode, "lut_encode_dense", data, consts,
                            (rows, consts.num_codebooks))
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
