"""TE compute and PrimFunc builder of the shuffle-friendly dense lookup (K = 16, INT8 tables).

Layout (different from ``lut_compute.lookup_dense``, chosen so that a byte shuffle does the
lookup):

* codes ``[C, M]`` uint8, codebook-major: the codes of consecutive rows for one codebook are
  contiguous, so 16/32/64 of them load as one shuffle index vector;
* tables ``[N, C, 16]`` int8: one 16-byte column per (output channel, codebook), one register;
* output ``Y[M, N]`` float32 ``= acc * scale[n] + bias[n]`` (optional ReLU), with
  ``acc[m, n] = sum_c T[n, c, code[c, m]]``.

The lookup is written in one-hot form, ``acc16[n, m] += Select(code[c, m] == k, int16(T[n, c,
k]), 0)`` over ``k < 16``, which ``tensorize`` matches against the shuffle intrinsics of
``schedules.intrin.lut_shuffle``. Rows are padded to a multiple of ``ROW_ALIGN`` (64, the
widest shuffle) with code 0; padded rows are computed and never stored.

Overflow: int16 holds the sum of up to 258 int8 values of magnitude <= 127 (258 * 127 = 32766),
so the codebooks are accumulated in chunks of at most ``INT16_SAFE_CODEBOOKS = 256`` into
separate int16 accumulators (``lut_acc16_0``, ``lut_acc16_1``, ...) that the epilogue adds in
int32. The result is exact for any C (with tables in ``[-128, 127]``, 256 * 128 = 32768 would
overflow by one at -128 * 256; the quantizer emits ``[-127, 127]``, and chunks of 256 of those
are safe).
"""

from __future__ import annotations

from tvm import te, tirx

from .attrs import LutKind
from .lut_compute import to_prim_func

LOOKUP_DENSE_SHUFFLE = LutKind.LOOKUP_DENSE_SHUFFLE

NUM_CENTROIDS = 16
CODE_DTYPE = "uint8"
TABLE_DTYPE = "int8"
ACC16_DTYPE = "int16"
ROW_ALIGN = 64
INT16_SAFE_CODEBOOKS = 256

CODES_PAD_BLOCK = "lut_codes_pad"
ACC_BLOCK_PREFIX = "lut_acc16_"
OUT_BLOCK = "lookup_out"


def padded_rows(rows: int, align: int = ROW_ALIGN) -> int:
    """``rows`` rounded up to a multiple of ``align``."""
    return -(-rows // align) * align


def codebook_chunks(num_codebooks: int, chunk: int = INT16_SAFE_CODEBOOKS) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` chunks of at most ``chunk`` codebooks, as even as possible."""
    count = -(-num_codebooks // chunk)
    bounds = [round(i * num_codebooks / count) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _one_hot_sum(codes: te.Tensor, table: te.Tensor, start: int, stop: int):
    """``acc16[n, m] = sum_{c in [start, stop), k < 16} Select(code[c, m] == k, int16(T[n, c, k]), 0)``."""
    c = te.reduce_axis((0, stop - start), name="c")
    k = te.reduce_axis((0, NUM_CENTROIDS), name="k")

    def one_hot(n, m):
        return te.sum(
            tirx.Select(
                codes[start + c, m].astype("int32") == k,
                table[n, start + c, k].astype(ACC16_DTYPE),
                tirx.const(0, ACC16_DTYPE),
            ),
            axis=[c, k],
        )

    return one_hot


def shuffle_accumulators(
    codes_t: te.Tensor,
    table: te.Tensor,
    row_align: int = ROW_ALIGN,
    chunk: int = INT16_SAFE_CODEBOOKS,
) -> list[te.Tensor]:
    """The int16 accumulators ``[N, M_pad]`` (one per codebook chunk) of codes ``[C, M]`` uint8
    and a table ``[N, C, 16]`` int8; rows padded to ``row_align`` with code 0."""
    num_codebooks, rows = (int(d) for d in codes_t.shape)
    out_features, table_codebooks, num_centroids = (int(d) for d in table.shape)
    if table_codebooks != num_codebooks or num_centroids != NUM_CENTROIDS:
        raise ValueError(
            f"table {tuple(table.shape)} does not match codes {tuple(codes_t.shape)} with K = 16"
        )
    rows_pad = padded_rows(rows, row_align)
    if rows_pad != rows:
        codes = te.compute(
            (num_codebooks, rows_pad),
            lambda c, m: tirx.if_then_else(
                m < rows, codes_t[c, tirx.min(m, rows - 1)], tirx.const(0, CODE_DTYPE)
            ),
            name=CODES_PAD_BLOCK,
        )
    else:
        codes = codes_t
    return [
        te.compute(
            (out_features, rows_pad),
            _one_hot_sum(codes, table, start, stop),
            name=f"{ACC_BLOCK_PREFIX}{index}",
        )
        for index, (start, stop) in enumerate(codebook_chunks(num_codebooks, chunk))
    ]


def scaled_output(accs: list[te.Tensor], scale: te.Tensor, bias: te.Tensor, n, m, relu: bool):
    """``(sum of the int16 chunks in int32) * scale[n] + bias[n]`` at ``(n, m)``, optional ReLU."""
    total = accs[0][n, m].astype("int32")
    for acc in accs[1:]:
        total = total + acc[n, m].astype("int32")
    value = total.astype("float32") * scale[n] + bias[n]
    return tirx.max(value, tirx.const(0.0, "float32")) if relu else value


def lookup_dense_shuffle(
    codes_t: te.Tensor,
    table: te.Tensor,
    scale: te.Tensor,
    bias: te.Tensor,
    relu: bool = False,
    row_align: int = ROW_ALIGN,
    chunk: int = INT16_SAFE_CODEBOOKS,
) -> te.Tensor:
    """``Y[M, N]`` float32 from codes ``[C, M]`` uint8 and a table ``[N, C, 16]`` int8."""
    rows = int(codes_t.shape[1])
    out_features = int(table.shape[0])
    accs = shuffle_accumulators(codes_t, table, row_align, chunk)
    return te.compute(
        (rows, out_features),
        lambda m, n: scaled_output(accs, scale, bias, n, m, relu),
        name=OUT_BLOCK,
    )


def lookup_dense_shuffle_func(
    rows: int, num_codebooks: int, out_features: int, relu: bool = False,
    chunk: int = INT16_SAFE_CODEBOOKS,
) -> tirx.PrimFunc:
    """``(codes [C, M] u8, table [N, C, 16] i8, scale [N], bias [N]) -> y [M, N] f32``."""
    codes = te.placeholder((num_codebooks, rows), CODE_DTYPE, "codes")
    table = te.placeholder((out_features, num_codebooks, NUM_CENTROIDS), TABLE_DTYPE, "table")
    scale = te.placeholder((out_features,), "float32", "scale")
    bias = te.placeholder((out_features,), "float32", "bias")
    out = lookup_dense_shuffle(codes, table, scale, bias, relu, chunk=chunk)
    return to_prim_func([codes, table, scale, bias, out], LOOKUP_DENSE_SHUFFLE, relu=int(relu))
