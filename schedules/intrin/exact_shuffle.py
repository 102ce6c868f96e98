"""Byte-shuffle tensor intrinsics for LUT-NA's exact look-up: a 16-entry int16 table as two byte tables.

The exact kernel's activation table ``T[m, g, :]`` has 16 int16 entries (``|T| <= 508``). A byte
shuffle looks up bytes, so the table is split into its low byte ``lo = T & 255`` (uint8) and
high byte ``hi = T >> 8`` (int8, in ``[-2, 1]``): ``T = hi * 256 + lo``. One intrinsic call
performs ``L`` look-ups of one table (row ``m``, group ``g``) indexed by the 4-bit weight
patterns of ``L`` consecutive output columns, and adds them into ``L`` int16 accumulators:

    for n in range(L), k in range(16):
        acc[n] += Select(int32(pat[n]) == k, int16(hi[k]) * 256 + int16(lo[k]), 0)

(the one-hot form that ``tensorize`` matches). The implementations shuffle both byte tables
with the same pattern vector, widen (``lo`` zero-extended, ``hi`` sign-extended and shifted by
8) and add: two shuffles per ``L`` look-ups.

* AVX-512BW ``vpshufb`` zmm, ``L = 64`` (the 16-byte tables broadcast to the four 128-bit lanes);
* AVX2 ``vpshufb`` ymm, ``L = 32``;
* NEON ``tbl`` (one-register table), ``L = 16``.

Patterns are in ``[0, 16)``, where a shuffle equals the description (``vpshufb`` reads the low
4 bits and zeroes a lane whose bit 7 is set; ``tbl`` zeroes indices >= 16).
"""

from __future__ import annotations

import functools

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from ._common import TABLE_ENTRIES, broadcast_16, one_hot_desc, vector_impl
from .lut_shuffle import (
    LLVM_SHUFFLE,
    LUT16_SHUFFLE_AVX2,
    LUT16_SHUFFLE_AVX512,
    LUT16_SHUFFLE_NEON,
    shuffle_intrin_for_target,
)

EXACT_SHUFFLE_AVX512 = "lut_tvm_exact16_shuffle_avx512"
EXACT_SHUFFLE_AVX2 = "lut_tvm_exact16_shuffle_avx2"
EXACT_SHUFFLE_NEON = "lut_tvm_exact16_shuffle_neon"

# Columns (look-ups) per intrinsic call.
EXACT_SHUFFLE_LANES = {EXACT_SHUFFLE_AVX512: 64, EXACT_SHUFFLE_AVX2: 32, EXACT_SHUFFLE_NEON: 16}

# The LLVM intrinsic each implementation calls (the same shuffles as the LUT-NN look-up).
EXACT_LLVM_SHUFFLE = {
    EXACT_SHUFFLE_AVX512: LLVM_SHUFFLE[LUT16_SHUFFLE_AVX512],
    EXACT_SHUFFLE_AVX2: LLVM_SHUFFLE[LUT16_SHUFFLE_AVX2],
    EXACT_SHUFFLE_NEON: LLVM_SHUFFLE[LUT16_SHUFFLE_NEON],
}

_FOR_LUT16 = {
    LUT16_SHUFFLE_AVX512: EXACT_SHUFFLE_AVX512,
    LUT16_SHUFFLE_AVX2: EXACT_SHUFFLE_AVX2,
    LUT16_SHUFFLE_NEON: EXACT_SHUFFLE_NEON,
}

PATTERN_DTYPE = "uint8"
LOW_DTYPE = "uint8"
HIGH_DTYPE = "int8"
ACC_DTYPE = "int16"


def _func(lanes: int, llvm_name: str | None = None):
    """The description (``llvm_name`` None) or, shuffling the low and the high byte table with
    one pattern vector, widening and adding, the implementation."""
    byte_vec, wide_vec = f"int8x{lanes}", f"{ACC_DTYPE}x{lanes}"
    describe = llvm_name is None  # a Python bool: TVMScript keeps only the branch taken

    @T.prim_func(s_tir=True)
    def func(pat_h: T.handle, lo_h: T.handle, hi_h: T.handle, acc_h: T.handle) -> None:
        pat = T.match_buffer(pat_h, (lanes,), PATTERN_DTYPE, offset_factor=1)
        lo = T.match_buffer(lo_h, (TABLE_ENTRIES,), LOW_DTYPE, offset_factor=1)
        hi = T.match_buffer(hi_h, (TABLE_ENTRIES,), HIGH_DTYPE, offset_factor=1)
        acc = T.match_buffer(acc_h, (lanes,), ACC_DTYPE, offset_factor=1)
        with T.sblock("root"):
            T.reads(acc[0:lanes], pat[0:lanes], hi[0:TABLE_ENTRIES], lo[0:TABLE_ENTRIES])
            T.writes(acc[0:lanes])
            if describe:
                for n, k in T.grid(lanes, TABLE_ENTRIES):
                    with T.sblock("update"):
                        vn, vk = T.axis.remap("SR", [n, k])
                        acc[vn] = acc[vn] + T.Select(
                            T.Cast("int32", pat[vn]) == vk,
                            T.Cast(ACC_DTYPE, hi[vk]) * T.int16(256) + T.Cast(ACC_DTYPE, lo[vk]),
                            T.int16(0),
                        )
            else:
                index = T.reinterpret(byte_vec, pat.vload([0], f"uint8x{lanes}"))
                low = T.call_llvm_pure_intrin(
                    byte_vec, llvm_name,
                    broadcast_16(T.reinterpret("int8x16", lo.vload([0], "uint8x16")), lanes),
                    index,
                )
                high = T.call_llvm_pure_intrin(
                    byte_vec, llvm_name, broadcast_16(hi.vload([0], "int8x16"), lanes), index,
                )
                acc[T.ramp(0, 1, lanes)] = (
                    acc[T.ramp(0, 1, lanes)]
                    + T.shift_left(T.Cast(wide_vec, high), T.Broadcast(T.int16(8), lanes))
                    + T.Cast(wide_vec, T.reinterpret(f"uint8x{lanes}", low))
                )

    return func.with_attr("global_symbol", "desc" if describe else "impl")


# AVX-512BW word permute: the int16 table itself (16 words, repeated to 32) permuted by int16
# patterns, 32 look-ups per ``vpermw`` with no byte split or widening (measured 1.4-1.6x faster
# than the byte shuffles above on this CPU, 128 x 384 x 384, b = 4 and 8, one thread).
EXACT_PERMW_AVX512 = "lut_tvm_exact16_permw_avx512"
EXACT_PERMW_LANES = 32
LLVM_PERMW = "llvm.x86.avx512.permvar.hi.512"
WORD_DTYPE = "int16"


def _word_desc():
    return one_hot_desc(EXACT_PERMW_LANES, WORD_DTYPE, WORD_DTYPE, ACC_DTYPE, lambda entry: entry)


def _word_impl():
    def permute(table, pat):
        return T.call_llvm_pure_intrin("int16x32", LLVM_PERMW,
                                       T.vectorcombine("int16x32", table, table),
                                       pat.vload([0], "int16x32"))

    return vector_impl(EXACT_PERMW_LANES, WORD_DTYPE, WORD_DTYPE, ACC_DTYPE,
                       lambda _, tab: tab.vload([0], "int16x16"), permute)


@functools.cache
def register_exact_shuffle_intrinsics() -> None:
    """Register the three intrinsics, once, on first use rather than at import: parsing
    TVMScript walks the Python stack (seconds per function once torch is imported)."""
    for name, lanes in EXACT_SHUFFLE_LANES.items():
        TensorIntrin.register(name, _func(lanes), _func(lanes, EXACT_LLVM_SHUFFLE[name]),
                              override=True)
    TensorIntrin.register(EXACT_PERMW_AVX512, _word_desc(), _word_impl(), override=True)


def exact_shuffle_intrin_for_target(target) -> str | None:
    """The widest exact shuffle intrinsic ``target`` supports (registered), or None; the
    same rule as LUT-NN's ``shuffle_intrin_for_target``."""
    lut16 = shuffle_intrin_for_target(target)
    if not lut16:
        return None
    register_exact_shuffle_intrinsics()
    return _FOR_LUT16[lut16]


def exact_word_intrin_for_target(target) -> str | None:
    """The int16 word-permute intrinsic where ``target`` has AVX-512BW, else None."""
    if exact_shuffle_intrin_for_target(target) != EXACT_SHUFFLE_AVX512:
        return None
    return EXACT_PERMW_AVX512
