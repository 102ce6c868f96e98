"""Byte-shuffle tensor intrinsics for a K = 16 INT8 table lookup into uint16 word sums, and the
dense lookup's transposed epilogue (``TRANSPOSED_EPILOGUE``, at the end).

One intrinsic call performs the 64 lookups of one 64-row block into one 16-byte table column
(one output channel ``n`` and one codebook ``c``) and adds them into the block's 2 x 32 word
sums (``schedules.lut_shuffle_compute``: ``S`` and ``H`` of the 32 row pairs ``pair_rows(w)``):

    for s in range(2), w in range(32), k in range(16):
        acc[s, w] += word_term(s, codes[low(w)], codes[high(w)], tab[k], k)

This is the one-hot form that ``tensorize`` can match (a direct gather ``tab[codes[m]]``
cannot be matched). The implementations:

* permute the 64 codes in-lane so that byte ``2w`` / ``2w + 1`` index rows ``low(w)`` /
  ``high(w)`` (a constant byte shuffle; the same for every channel, so LLVM computes it once
  per codebook and row block of a tile);
* bias the column, ``T ^ 0x80 = T + 128`` (once per column and tile);
* look up with byte shuffles: AVX-512BW ``vpshufb`` zmm (one; the column broadcast to the four
  128-bit lanes, ``vpshufb`` shuffles within each), AVX2 ``vpshufb`` ymm (two), NEON ``tbl``
  (four, one-register table);
* add the 32 words to ``S`` and the words shifted right by 8 to ``H``.

The shuffle implementations read only the low 4 bits of a code (``vpshufb`` also zeroes a
lane whose code has bit 7 set; ``tbl`` lanes with codes >= 16), so they equal the description
for codes in ``[0, 16)``, which is the only range a K = 16 encoder produces.
"""

from __future__ import annotations

import functools

from tvm.script import tirx as T

from lut_tvm.target_features import target_features

from schedules.lut_shuffle_compute import (
    ACC16_DTYPE,
    DECODED_DTYPE,
    ROW_ALIGN,
    WORDS,
    pair_rows,
    word_term,
)

from ._common import TABLE_ENTRIES, broadcast_16
from .registry import declare

LUT16_SHUFFLE_AVX512 = "lut_tvm_lut16_shuffle_avx512"
LUT16_SHUFFLE_AVX2 = "lut_tvm_lut16_shuffle_avx2"
LUT16_SHUFFLE_NEON = "lut_tvm_lut16_shuffle_neon"

# Lookups per shuffle instruction (one intrinsic call is ROWS_PER_CALL rows, 64 / lanes shuffles).
LUT16_SHUFFLE_LANES = {LUT16_SHUFFLE_AVX512: 64, LUT16_SHUFFLE_AVX2: 32, LUT16_SHUFFLE_NEON: 16}
ROWS_PER_CALL = ROW_ALIGN

# The LLVM intrinsic each implementation calls (tests look for these names in the TIR).
LLVM_SHUFFLE = {
    LUT16_SHUFFLE_AVX512: "llvm.x86.avx512.pshuf.b.512",
    LUT16_SHUFFLE_AVX2: "llvm.x86.avx2.pshuf.b",
    LUT16_SHUFFLE_NEON: "llvm.aarch64.neon.tbl1",
}

NUM_CENTROIDS = TABLE_ENTRIES
CODE_DTYPE = "uint8"
TABLE_DTYPE = "int8"
ACC_DTYPE = ACC16_DTYPE
# Byte b of the permuted index vector: the code of row PAIRED_ORDER[b] (2w: low, 2w + 1: high).
PAIRED_ORDER = [row for word in range(WORDS) for row in pair_rows(word)]


def word_sum_lookup_func(lanes: int | None, llvm_name: str | None = None,
                         entries: int = TABLE_ENTRIES):
    """The description (``lanes`` None) or the implementation with ``lanes``-byte table lookups
    (``llvm_name(column, index)``, byte ``i`` of the result = ``column[index[i]]``) of one
    64-row block's word sums over an ``entries``-byte table column (K = 16 here; 32 / 64 for the
    ``vpermb`` intrinsics of ``schedules.intrin.lut_vbmi``, which build on this one)."""
    describe = lanes is None  # a Python bool: TVMScript keeps only the branch taken
    rows, words = ROWS_PER_CALL, WORDS
    word_vec = f"{ACC_DTYPE}x{words}"

    def repeated(column):
        """The ``entries``-byte column repeated to ``lanes`` bytes (a 16-byte shuffle reads each
        128-bit lane; a 64-byte ``vpermb`` of a 32-entry table reads codes < 32 only)."""
        if entries == TABLE_ENTRIES:
            return broadcast_16(column, lanes)
        width = entries
        while width < lanes:
            width *= 2
            column = T.vectorcombine(f"int8x{width}", column, column)
        return column

    def looked_up(index, tab):
        """The 64 looked-up bytes, pair-ordered, as 32 words."""
        codes = T.Shuffle([index.vload([0], f"{CODE_DTYPE}x{rows}")], PAIRED_ORDER)
        column = T.bitwise_xor(repeated(tab.vload([0], f"int8x{entries}")),
                               T.Broadcast(T.int8(-128), lanes))
        parts = [
            T.call_llvm_pure_intrin(
                f"int8x{lanes}", llvm_name, column,
                T.reinterpret(f"int8x{lanes}", T.Shuffle([codes], list(range(i, i + lanes)))
                              if lanes < rows else codes),
            )
            for i in range(0, rows, lanes)
        ]
        width = lanes
        while len(parts) > 1:
            width *= 2
            parts = [T.vectorcombine(f"int8x{width}", parts[i], parts[i + 1])
                     for i in range(0, len(parts), 2)]
        return T.reinterpret(word_vec, parts[0])

    @T.prim_func(s_tir=True)
    def func(index_h: T.handle, tab_h: T.handle, acc_h: T.handle) -> None:
        index = T.match_buffer(index_h, (rows,), CODE_DTYPE, offset_factor=1)
        tab = T.match_buffer(tab_h, (entries,), TABLE_DTYPE, offset_factor=1)
        acc = T.match_buffer(acc_h, (2, words), ACC_DTYPE, offset_factor=1)
        with T.sblock("root"):
            T.reads(acc[0:2, 0:words], index[0:rows], tab[0:entries])
            T.writes(acc[0:2, 0:words])
            if describe:
                for s, w, k in T.grid(2, words, entries):
                    with T.sblock("update"):
                        vs, vw, vk = T.axis.remap("SSR", [s, w, k])
                        acc[vs, vw] = acc[vs, vw] + word_term(
                            vs, T.Cast("int32", index[pair_rows(vw)[0]]),
                            T.Cast("int32", index[pair_rows(vw)[1]]), tab[vk], vk)
            else:
                # The looked-up words are written twice, not bound to a variable: TVMScript
                # makes a bound vector a "local" buffer, which LowerTVMBuiltin serves with a
                # workspace call per tile; TVM's CSE (or LLVM's) keeps one shuffle.
                acc[0, T.ramp(0, 1, words)] = acc[0, T.ramp(0, 1, words)] + looked_up(index, tab)
                acc[1, T.ramp(0, 1, words)] = acc[1, T.ramp(0, 1, words)] + T.shift_right(
                    looked_up(index, tab), T.Broadcast(T.uint16(8), words))

    return func.with_attr("global_symbol", "desc" if describe else "impl")


def _lookup_pair(lanes: int, llvm_name: str) -> tuple:
    return word_sum_lookup_func(None), word_sum_lookup_func(lanes, llvm_name)


for _name, _lanes in LUT16_SHUFFLE_LANES.items():  # registered on first use (``registry.ensure``)
    declare(_name, functools.partial(_lookup_pair, _lanes, LLVM_SHUFFLE[_name]))

_SHUFFLE_BY_LANES = {64: LUT16_SHUFFLE_AVX512, 32: LUT16_SHUFFLE_AVX2, 16: LUT16_SHUFFLE_NEON}


def shuffle_intrin_for_target(target) -> str | None:
    """The widest shuffle intrinsic ``target`` supports, or None (no 16-entry byte shuffle).

    Decided from the target (``lut_tvm.target_features``), not the host CPU: the target says
    what the generated code may use.
    """
    return _SHUFFLE_BY_LANES.get(target_features(target).shuffle_lanes)


# The dense lookup's epilogue, ``out[m, n] = float(acc[n, m]) * scale[n] + bias[n]`` (ReLU), over
# 8 rows x ``n`` channels of an int16 ``acc`` (one codebook chunk): ``acc`` is channel-major,
# ``out`` row-major, so the tile is transposed.
# In registers (one shufflevector per row) instead of LLVM's 8-lane scatter per channel.
TRANSPOSE_ROWS = 8
TRANSPOSED_EPILOGUE = {
    (4, False): "lut_tvm_lut16_epilogue_t4",
    (4, True): "lut_tvm_lut16_epilogue_t4_relu",
    (8, False): "lut_tvm_lut16_epilogue_t8",
    (8, True): "lut_tvm_lut16_epilogue_t8_relu",
}


def _epilogue_func(channels: int, relu: bool, describe: bool):
    rows = TRANSPOSE_ROWS
    row_vec = f"float32x{rows}"

    def finish(value, lanes: int | None = None):
        zero = T.float32(0) if lanes is None else T.Broadcast(T.float32(0), lanes)
        return T.max(value, zero) if relu else value

    def scaled_columns(acc, scale, bias):
        """All channels' 8 rows, scaled, channel after channel (one vector)."""
        columns = [
            finish(T.Cast(row_vec, T.Cast(f"int32x{rows}", acc[j, T.ramp(0, 1, rows)]))
                   * T.Broadcast(scale[j], rows)
                   + T.Broadcast(bias[j], rows), rows)
            for j in range(channels)
        ]
        return T.Shuffle(columns, list(range(rows * channels)))

    def row(columns, i: int):
        return T.Shuffle([columns], [j * rows + i for j in range(channels)])

    @T.prim_func(s_tir=True)
    def func(acc_h: T.handle, scale_h: T.handle, bias_h: T.handle, out_h: T.handle) -> None:
        acc_stride = T.int32()
        out_stride = T.int32()
        acc = T.match_buffer(acc_h, (channels, rows), DECODED_DTYPE, strides=[acc_stride, 1],
                             offset_factor=1)
        scale = T.match_buffer(scale_h, (channels,), "float32", offset_factor=1)
        bias = T.match_buffer(bias_h, (channels,), "float32", offset_factor=1)
        out = T.match_buffer(out_h, (rows, channels), "float32", strides=[out_stride, 1],
                             offset_factor=1)
        with T.sblock("root"):
            T.reads(acc[0:channels, 0:rows], scale[0:channels], bias[0:channels])
            T.writes(out[0:rows, 0:channels])
            if describe:
                for i, j in T.grid(rows, channels):
                    with T.sblock("out"):
                        vi, vj = T.axis.remap("SS", [i, j])
                        out[vi, vj] = finish(T.Cast("float32", T.Cast("int32", acc[vj, vi]))
                                             * scale[vj] + bias[vj])
            else:
                # scaled_columns is repeated, not bound (a bound vector becomes a workspace
                # call per tile, as in the lookup above); CSE keeps one copy.
                out[0, T.ramp(0, 1, channels)] = row(scaled_columns(acc, scale, bias), 0)
                out[1, T.ramp(0, 1, channels)] = row(scaled_columns(acc, scale, bias), 1)
                out[2, T.ramp(0, 1, channels)] = row(scaled_columns(acc, scale, bias), 2)
                out[3, T.ramp(0, 1, channels)] = row(scaled_columns(acc, scale, bias), 3)
                out[4, T.ramp(0, 1, channels)] = row(scaled_columns(acc, scale, bias), 4)
                out[5, T.ramp(0, 1, channels)] = row(scaled_columns(acc, scale, bias), 5)
                out[6, T.ramp(0, 1, channels)] = row(scaled_columns(acc, scale, bias), 6)
                out[7, T.ramp(0, 1, channels)] = row(scaled_columns(acc, scale, bias), 7)

    return func.with_attr("global_symbol", "desc" if describe else "impl")


def _epilogue_pair(channels: int, relu: bool) -> tuple:
    return _epilogue_func(channels, relu, True), _epilogue_func(channels, relu, False)


for (_channels, _relu), _name in TRANSPOSED_EPILOGUE.items():
    declare(_name, functools.partial(_epilogue_pair, _channels, _relu))
