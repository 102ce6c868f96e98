"""RewriteDenseToLUT: replace planned ``matmul(x, const W)`` by encode + lookup/accumulate.

Before: ``FoldConstant`` has run, so dense layers read ``matmul(x, const W[D, N])`` (x of rank
>= 2). After: for each matmul whose weight fingerprint the plan names, ``x`` is reshaped to
``[M, D]``, encoded to uint8 codes, and looked up into ``[M, N]`` (bias zero; a following bias
add / ReLU is folded in by FuseLUTEpilogue). Where the current target has a shuffle
instruction and the shape suits it (``lut_layer_builder.use_shuffle_lookup``), the row-vectorized
encode writes the codes codebook-major ``[C, M]`` and the byte-shuffle lookup reads them (tables
``[N, C, K]``); else the encode writes codes ``[M, C]`` for the row-gather lookup (tables
``[C, K, N]``). A layer with the int8 encode (``plan.EncodeMode.INT8``) always encodes with
``encode_dense_rows_int8_func`` (codes ``[C, M]``; transposed for the row-gather lookup where the
shuffle lookup does not serve). Other matmuls are left alone.
"""

from __future__ import annotations

from tvm import relax
from tvm.ir.transform import module_pass

from lut_tvm.plan import LayerPlan
from schedules.lut_encode_rows_compute import encode_dense_rows_func
from schedules.lut_encode_rows_int8_compute import encode_dense_rows_int8_func
from schedules.lut_kernels import encode_dense_func, lookup_dense_func
from schedules.lut_shuffle_compute import lookup_dense_shuffle_func

from .layer_sites import LayerSite, match_dense
from .lut_layer_builder import LutLayerConstants, emit_encode, lookup_call, use_shuffle_lookup
from .planned_rewriter import PlannedRewritePass, emit_on_rows


def _lookup_rows(builder: relax.BlockBuilder, data, rows: int, consts: LutLayerConstants) -> relax.Expr:
    """Encode + lookup of ``data [rows, D]``: the ``[rows, N]`` call."""
    out_shape = (rows, consts.out_features)
    if consts.int8_encode:
        return _lookup_rows_int8(builder, data, rows, consts)
    if use_shuffle_lookup(rows, consts.num_centroids):
        encode = encode_dense_rows_func(rows, consts.num_codebooks, consts.num_centroids,
                                        consts.sub_len)
        codes = emit_encode(builder, encode, "lut_encode_dense_rows", data, consts,
                            (consts.num_codebooks, rows))
        lookup = lookup_dense_shuffle_func(rows, consts.num_codebooks, consts.out_features,
                                           num_centroids=consts.num_centroids)
        return lookup_call(builder, lookup, "lut_lookup_dense_shuffle", codes, consts, out_shape,
                           shuffle=True)
    encode = encode_dense_func(rows, consts.num_codebooks, consts.num_centroids, consts.sub_len)
    codes = emit_encode(builder, encode, "lut_encode_dense", data, consts, (rows, consts.num_codebooks))
    lookup = lookup_dense_func(rows, consts.num_codebooks, consts.num_centroids, consts.out_features,
                               relu=False)
    return lookup_call(builder, lookup, "lut_lookup_dense", codes, consts, out_shape)


def _lookup_rows_int8(builder: relax.BlockBuilder, data, rows: int, consts: LutLayerConstants) -> relax.Expr:
    """The int8 encode (codes ``[C, M]``) + the shuffle lookup, or the row-gather one on the
    transposed codes."""
    encode = encode_dense_rows_int8_func(rows, consts.num_codebooks, consts.num_centroids, consts.sub_len)
    codes = emit_encode(builder, encode, "lut_encode_dense_rows_int8", data, consts, (consts.num_codebooks, rows))
    out_shape = (rows, consts.out_features)
    if use_shuffle_lookup(rows, consts.num_centroids):
        lookup = lookup_dense_shuffle_func(rows, consts.num_codebooks, consts.out_features,
                                           num_centroids=consts.num_centroids)
        return lookup_call(builder, lookup, "lut_lookup_dense_shuffle", codes, consts, out_shape, shuffle=True)
    codes = builder.emit(relax.op.permute_dims(codes, [1, 0]))
    lookup = lookup_dense_func(rows, consts.num_codebooks, consts.num_centroids, consts.out_features, relu=False)
    return lookup_call(builder, lookup, "lut_lookup_dense", codes, consts, out_shape)


@module_pass(opt_level=0, name="RewriteDenseToLUT")
class RewriteDenseToLUT(PlannedRewritePass):
    """Rewrite the plan's dense layers into LUT primitives."""

    match = staticmethod(match_dense)

    def emit(self, builder: relax.BlockBuilder, call: relax.Call, site: LayerSite,
             layer: LayerPlan) -> relax.Expr:
        consts = LutLayerConstants(site, layer)
        return emit_on_rows(builder, call, site, consts.out_features,
                            lambda data, shape: _lookup_rows(builder, data, shape[0], consts))
