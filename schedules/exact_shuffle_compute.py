"""TE compute of LUT-NA's exact kernel in the byte-shuffle form (tables split into low/high bytes).

Same math as ``schedules.exact_lut_compute`` (see ``lut_tvm.exact.reference``), laid out so that
a byte shuffle (``vpshufb`` / ``tbl``, ``schedules.intrin.exact_shuffle``) does the look-up:

* ``exact_table_lo`` / ``exact_table_hi`` ``[M, chunks, NB, Kmax/chunks, 16]``: for each list
  entry of each column block, the int16 activation table ``T`` of its group as its low byte
  (uint8) and high byte (int8), ``T = hi * 256 + lo``; one 16-byte register each;
* the weight in ``reference.ExactBlockPacked`` layout: ``group_index [Kmax, NB]`` (kept groups
  per block of 64 columns), ``patterns [b, Kmax, NB*64]``; columns are the shuffle lanes;
* ``exact_acc16`` ``[chunks, b, M, NB*64]`` int16: per plane, the one-hot look-up
  ``Select(pat == k, int16(hi[k]) * 256 + int16(lo[k]), 0)`` summed over ``k`` and over a
  chunk of at most 64 list entries (``|T| <= 508``, ``64 * 508 = 32512`` fits int16; the
  lists are padded so that every chunk has the same length);
* ``exact_combine`` ``[M, N]`` int32: ``sum_c sum_j coef_j * int32(acc16[c, j])`` for the ``N``
  real columns (shift-and-add, ``coef = 1, 2, ..., -2^(b-1)``); ``exact_out``:
  ``float32(acc + bias_q) * out_scale`` (one float multiply, as in the gather form).
"""

from __future__ import annotations

from tvm import te, tirx

from .attrs import LutKind
from .exact_lut_compute import (
    ACC_DTYPE,
    COMBINE_BLOCK,
    INDEX_DTYPE,
    PATTERN_DTYPE,
    TABLE_ENTRIES,
    activation_tables,
    dequantize_epilogue,
    layer_input,
    to_exact_prim_func,
)

EXACT_LUT_SHUFFLE = LutKind.EXACT_LUT_SHUFFLE

COLUMN_BLOCK = 64  # lut_tvm.exact.reference.COLUMN_BLOCK: the packed layout's block width
SAFE_CHUNK = 64  # list entries per int16 accumulator: 64 * 508 < 2^15
LOW_DTYPE, HIGH_DTYPE, ACC16_DTYPE = "uint8", "int8", "int16"
WORD_PATTERN_DTYPE = "int16"

TABLE_SEL_BLOCK = "exact_table_sel"
TABLE_LO_BLOCK = "exact_table_lo"
TABLE_HI_BLOCK = "exact_table_hi"
ACC16_BLOCK = "exact_acc16"


def chunk_layout(kmax: int, chunk: int = SAFE_CHUNK) -> tuple[int, int]:
    """``(chunks, entries per chunk)`` covering ``kmax`` list entries with at most ``chunk`` each;
    the packed lists are padded to ``chunks * entries`` (``ExactBlockPacked.with_entries``)."""
    chunks = max(1, -(-kmax // chunk))
    return chunks, -(-kmax // chunks)


def selected_byte_tables(xq: te.Tensor, group_index: te.Tensor, chunks: int, per_chunk: int):
    """``(lo uint8, hi int8)`` ``[M, chunks, NB, per_chunk, 16]``: the activation table of each
    list entry's group, per column block, split into bytes (the indirection happens here, so
    the look-up reads its tables at affine indices, as ``tensorize`` needs)."""
    table = activation_tables(xq)
    rows, blocks = int(xq.shape[0]), int(group_index.shape[1])
    shape = (rows, chunks, blocks, per_chunk, TABLE_ENTRIES)

    def entry(m, c, b, e, k):
        return table[m, group_index[c * per_chunk + e, b], k]

    lo = te.compute(shape, lambda *i: tirx.bitwise_and(entry(*i), 255).astype(LOW_DTYPE),
                    name=TABLE_LO_BLOCK)
    hi = te.compute(shape, lambda *i: tirx.shift_right(entry(*i), 8).astype(HIGH_DTYPE),
                    name=TABLE_HI_BLOCK)
    return lo, hi


def selected_word_tables(xq: te.Tensor, group_index: te.Tensor, chunks: int, per_chunk: int):
    """int16 ``[M, chunks, NB, per_chunk, 16]``: each list entry's activation table, whole
    (the word-permute form looks up int16 entries directly)."""
    table = activation_tables(xq)
    shape = (int(xq.shape[0]), chunks, int(group_index.shape[1]), per_chunk, TABLE_ENTRIES)
    return te.compute(shape, lambda m, c, b, e, k: table[m, group_index[c * per_chunk + e, b], k],
                      name=TABLE_SEL_BLOCK)


def shuffle_accumulator(xq: te.Tensor, group_index: te.Tensor, patterns: te.Tensor) -> te.Tensor:
    """int16 ``acc16[c, j, m, n]``: plane ``j``'s look-ups summed over chunk ``c`` of the lists.

    int16 ``patterns`` select the word form (whole int16 tables, ``vpermw``); uint8 the byte
    form (low/high byte tables, ``vpshufb``/``tbl``)."""
    rows = int(xq.shape[0])
    bits, kmax, padded = (int(d) for d in patterns.shape)
    chunks, per_chunk = chunk_layout(kmax)
    if chunks * per_chunk != kmax or padded % COLUMN_BLOCK or \
            tuple(int(d) for d in group_index.shape) != (kmax, padded // COLUMN_BLOCK):
        raise ValueError(f"group_index {tuple(group_index.shape)} / patterns {tuple(patterns.shape)}"
                         f" are not a padded block layout of {COLUMN_BLOCK} columns")
    e = te.reduce_axis((0, per_chunk), name="e")
    k = te.reduce_axis((0, TABLE_ENTRIES), name="k")
    if patterns.dtype == WORD_PATTERN_DTYPE:
        words = selected_word_tables(xq, group_index, chunks, per_chunk)

        def entry(m, c, block):
            return words[m, c, block, e, k]
    else:
        lo, hi = selected_byte_tables(xq, group_index, chunks, per_chunk)

        def entry(m, c, block):
            return (hi[m, c, block, e, k].astype(ACC16_DTYPE) * tirx.const(256, ACC16_DTYPE)
                    + lo[m, c, block, e, k].astype(ACC16_DTYPE))

    def one_hot(c, j, m, n):
        value = entry(m, c, n // COLUMN_BLOCK)
        return te.sum(tirx.Select(patterns[j, c * per_chunk + e, n].astype("int32") == k, value,
                                  tirx.const(0, ACC16_DTYPE)), axis=[e, k])

    return te.compute((chunks, bits, rows, padded), one_hot, name=ACC16_BLOCK)


def shuffle_output(xq: te.Tensor, group_index: te.Tensor, patterns: te.Tensor, out_features: int,
                   out_scale: te.Tensor, bias_q: te.Tensor, relu: bool) -> te.Tensor:
    """float32 ``Y [M, N]``: shift-and-add of the int16 accumulators, + bias_q, dequantized."""
    acc = shuffle_accumulator(xq, group_index, patterns)
    chunks, bits = int(acc.shape[0]), int(acc.shape[1])
    c = te.reduce_axis((0, chunks), name="c")
    j = te.reduce_axis((0, bits), name="j")
    # A reduction over (chunk, plane), not an unrolled sum: the epilogue then reads the
    # accumulator at block variables only, which reverse_compute_at needs.
    coef = tirx.Select(j == bits - 1, tirx.const(-1, ACC_DTYPE), tirx.const(1, ACC_DTYPE)) \
        * tirx.shift_left(tirx.const(1, ACC_DTYPE), j)
    combined = te.compute(
        (int(xq.shape[0]), out_features),
        lambda m, n: te.sum(acc[c, j, m, n].astype(ACC_DTYPE) * coef, axis=[c, j]),
        name=COMBINE_BLOCK,
    )
    return dequantize_epilogue(combined, out_scale, bias_q, relu)


def exact_lut_shuffle_func(input_shape, geometry, bits: int, kmax: int, out_features: int,
                           act_scale: float, relu: bool = False,
                           word: bool = False) -> tirx.PrimFunc:
    """``(x, group_index [Kmax, NB] i32, patterns [b, Kmax, NB*64] u8, out_scale [N] f32,
    bias_q [N] i32) -> y [M, N] f32``; ``x`` is ``[M, D]`` (``geometry`` None) or NCHW.
    ``word``: int16 patterns and whole int16 tables (``vpermw``), else bytes."""
    x, xq, kind = layer_input(input_shape, geometry, act_scale)
    blocks = -(-out_features // COLUMN_BLOCK)
    group_index = te.placeholder((kmax, blocks), INDEX_DTYPE, "group_index")
    patterns = te.placeholder((bits, kmax, blocks * COLUMN_BLOCK),
                              WORD_PATTERN_DTYPE if word else PATTERN_DTYPE, "patterns")
    out_scale = te.placeholder((out_features,), "float32", "out_scale")
    bias_q = te.placeholder((out_features,), ACC_DTYPE, "bias_q")
    y = shuffle_output(xq, group_index, patterns, out_features, out_scale, bias_q, relu)
    return to_exact_prim_func([x, group_index, patterns, out_scale, bias_q, y], EXACT_LUT_SHUFFLE,
                         bits=bits, float_io=1, relu=int(relu), input=kind, word=int(word))
