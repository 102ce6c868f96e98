"""TE compute and PrimFunc builder of the int8 row encode: integer distances, codes written ``[C, M]``.

The math is ``lut_tvm.int8_encode_reference`` (see its docstring), laid out like the float row
encode (``lut_encode_rows_compute``: rows padded to whole 16-row tiles, codes codebook-major
``[C, M]`` as the shuffle lookup reads them, the same chained first-index argmin):

* ``encode_i8_xq [C, G, M_pad, 4]`` int8 — each row's sub-vector of codebook ``c`` quantized
  with the codebook's ``inv[c]`` (``clip(rint(x * inv[c]), -128, 127)``, 0 past ``V``), ``G =
  Vp / 4`` groups of 4 consecutive depths, so that ``L`` rows' group ``g`` is one ``4 L``-byte
  vector (rows in the 32-bit lanes, as ``vpmaddubsw`` / ``vpdpbusd`` read them);
* ``encode_rows_dot [C, K, M_pad]`` int32 — ``sum_{g, r} int32(pu[c, k, 4g + r]) *
  int32(xq[c, g, m, r])`` (exact: integers);
* ``encode_rows_argmin_partial`` / ``encode_rows_argmin`` / ``encode_rows_codes`` — as in the float
  encode, on ``dist = nq[c, k] - 2 dot`` in int32.

``value_at(m, d)`` gives element ``d`` of row ``m`` (a dense row here; a conv's windows can use
the same blocks). The schedule is ``schedules.rules.lut_encode_rows_int8``.
"""

from __future__ import annotations

from tvm import te, tirx

from lut_tvm.int8_encode_reference import GROUP, INPUT_QMAX, INPUT_QMIN, padded_sub_len

from .attrs import LutKind
from .int8_dense_compute import round_even
from .lut_compute import to_prim_func
from .lut_encode_rows_compute import (
    DOT_BLOCK,
    ROW_ALIGN,
    chained_argmin,
    codes_of,
    padded_rows,
    source_row,
)

ENCODE_DENSE_ROWS_INT8 = LutKind.ENCODE_DENSE_ROWS_INT8

XQ_BLOCK = "encode_i8_xq"


def _quantized_input(value_at, rows: int, inv: te.Tensor, sub_len: int, row_align: int) -> te.Tensor:
    """``xq [C, G, M_pad, 4]`` int8 (see the module doc)."""
    num_codebooks = int(inv.shape[0])
    sub_pad = padded_sub_len(sub_len)
    row = source_row(rows, row_align)

    def quant(c, g, m, r):
        v = g * GROUP + r
        depth = c * sub_len + (tirx.min(v, sub_len - 1) if sub_pad != sub_len else v)
        level = round_even(value_at(row(m), depth) * inv[c])
        level = tirx.max(tirx.min(level, tirx.const(float(INPUT_QMAX), "float32")),
                         tirx.const(float(INPUT_QMIN), "float32")).astype("int8")
        if sub_pad == sub_len:
            return level
        return tirx.if_then_else(v < sub_len, level, tirx.const(0, "int8"))

    return te.compute((num_codebooks, sub_pad // GROUP, padded_rows(rows, row_align), GROUP), quant,
                      name=XQ_BLOCK)


def encode_rows_int8(value_at, rows: int, depth: int, pu: te.Tensor, norms: te.Tensor, inv: te.Tensor,
                     sub_len: int, row_align: int = ROW_ALIGN, num_chains: int | None = None) -> te.Tensor:
    """Codes ``[C, M]`` (uint8) of ``M`` rows of ``depth = C * sub_len`` elements from the quantized
    centroids ``pu [C, K, Vp]`` uint8, their ``norms [C, K]`` int32 and the codebooks'
    ``inv [C]`` float32 (``lut_tvm.int8_encode_reference.quantize_centroids``)."""
    num_codebooks, num_centroids, sub_pad = (int(d) for d in pu.shape)
    if depth != num_codebooks * sub_len or sub_pad != padded_sub_len(sub_len):
        raise ValueError(f"data depth {depth} and centroids {list(pu.shape)} do not match "
                         f"{num_codebooks} codebooks x V = {sub_len}")
    xq = _quantized_input(value_at, rows, inv, sub_len, row_align)
    g = te.reduce_axis((0, sub_pad // GROUP), name="g")
    r = te.reduce_axis((0, GROUP), name="r")
    dot = te.compute(
        (num_codebooks, num_centroids, int(xq.shape[2])),
        lambda c, k, m: te.sum(
            pu[c, k, g * GROUP + r].astype("int32") * xq[c, g, m, r].astype("int32"), axis=[g, r]),
        name=DOT_BLOCK,
    )
    return codes_of(chained_argmin(dot, norms, num_chains), rows, row_align)


def encode_dense_rows_int8_func(rows: int, num_codebooks: int, num_centroids: int, sub_len: int,
                                num_chains: int | None = None) -> tirx.PrimFunc:
    """``(x [M, D] f32, pu [C, K, Vp] u8, norms [C, K] i32, inv [C] f32) -> codes [C, M] u8``."""
    if num_centroids > 256:
        raise ValueError(f"K = {num_centroids} centroids do not fit uint8 codes")
    depth = num_codebooks * sub_len
    data = te.placeholder((rows, depth), "float32", "data")
    pu = te.placeholder((num_codebooks, num_centroids, padded_sub_len(sub_len)), "uint8", "centroids_q")
    norms = te.placeholder((num_codebooks, num_centroids), "int32", "centroid_norms_q")
    inv = te.placeholder((num_codebooks,), "float32", "inv_scale")
    codes = encode_rows_int8(lambda m, d: data[m, d], rows, depth, pu, norms, inv, sub_len,
                             num_chains=num_chains)
    return to_prim_func([data, pu, norms, inv, codes], ENCODE_DENSE_ROWS_INT8)
