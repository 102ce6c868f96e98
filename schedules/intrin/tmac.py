"""T-MAC look-up intrinsics: ``L`` int16 table look-ups from ``L / 2`` bytes of packed 4-bit patterns.

One call looks up one activation table (16 exact int16 entries held as a low-byte table ``lo``
uint8 and a high-byte table ``hi`` int8, ``T = 256 hi + lo``) for the ``L`` columns of a tile,
indexed by their patterns packed two per byte (``lut_tvm.exact.reference.tmac``), and adds the
look-ups into ``L`` int16 accumulators:

    for l in range(L), k in range(16):
        byte, shift = nibble_position(l, L)
        acc[l] += Select(((pat[byte] >> shift) & 15) == k, int16(hi[k]) * 256 + int16(lo[k]), 0)

(the one-hot form ``tensorize`` matches). The implementation: split the bytes into low and
high nibbles (``and``, ``shift``, one concatenation) -> ``L`` indices; two byte shuffles of the
register-held tables (``vpshufb`` ymm ``L = 32`` on AVX2, zmm ``L = 64`` on AVX-512BW, NEON
``tbl`` with a one-register table ``L = 16`` on AArch64); the in-lane interleave of the two
results (``vpunpcklbw`` / ``vpunpckhbw``; NEON ``zip1`` / ``zip2``) is the int16 look-ups, in
column order by the packing; two int16 adds. No multiply, no widening instruction.
"""

from __future__ import annotations

import functools

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from lut_tvm.target_features import target_features

from ._common import TABLE_ENTRIES, broadcast_16
from .lut_shuffle import LLVM_SHUFFLE, LUT16_SHUFFLE_AVX2, LUT16_SHUFFLE_AVX512, LUT16_SHUFFLE_NEON

TMAC_AVX512 = "lut_tvm_tmac_avx512"
TMAC_AVX2 = "lut_tvm_tmac_avx2"
TMAC_NEON = "lut_tvm_tmac_neon"
TMAC_LANES = {TMAC_AVX512: 64, TMAC_AVX2: 32, TMAC_NEON: 16}
# The same byte shuffles as the LUT-NN look-up (``schedules.intrin.lut_shuffle``).
TMAC_LLVM_SHUFFLE = {TMAC_AVX512: LLVM_SHUFFLE[LUT16_SHUFFLE_AVX512],
                     TMAC_AVX2: LLVM_SHUFFLE[LUT16_SHUFFLE_AVX2],
                     TMAC_NEON: LLVM_SHUFFLE[LUT16_SHUFFLE_NEON]}
_BY_SHUFFLE_LANES = {lanes: name for name, lanes in TMAC_LANES.items()}

PATTERN_DTYPE, LOW_DTYPE, HIGH_DTYPE, ACC_DTYPE = "uint8", "uint8", "int8", "int16"


def nibble_byte_shift(lane, lanes: int, word: bool = False):
    """TIR ``(byte, shift)`` of ``lut_tvm.exact.reference.tmac.nibble_position`` for a lane
    expression (the compute and the description share it, so ``tensorize`` matches)."""
    half, quarter = lanes // 2, lanes // 4
    if word or lanes == 16:  # one 128-bit register: the interleave is the word order
        return tirx.floormod(lane, half), tirx.floordiv(lane, half) * 4
    byte = tirx.floordiv(tirx.floormod(lane, quarter), 8) * 16 \
        + tirx.floordiv(lane, half) * 8 + tirx.floormod(lane, 8)
    shift = tirx.floordiv(tirx.floormod(lane, half), quarter) * 4
    return byte, shift


def nibble(load_byte, lane, lanes: int, word: bool = False):
    """int32 ``(byte >> shift) & 15`` of ``lane``: its 4-bit pattern."""
    byte, shift = nibble_byte_shift(lane, lanes, word)
    return tirx.bitwise_and(tirx.shift_right(load_byte(byte).astype("int32"), shift), 15)


def table_entry(lo_value, hi_value):
    """int16 ``hi * 256 + lo``."""
    return hi_value.astype(ACC_DTYPE) * tirx.const(256, ACC_DTYPE) + lo_value.astype(ACC_DTYPE)


def _interleave(lanes: int, high: bool) -> list[int]:
    """Byte indices into ``concat(low, high)`` of the in-lane interleave (unpack low/high)."""
    start = 8 if high else 0
    return [idx for lane in range(lanes // 16) for e in range(8)
            for idx in (16 * lane + start + e, lanes + 16 * lane + start + e)]


def _func(lanes: int, llvm_name: str | None = None):
    half = lanes // 2
    describe = llvm_name is None  # a Python bool: TVMScript keeps only the branch taken

    @T.prim_func(s_tir=True)
    def func(pat_h: T.handle, lo_h: T.handle, hi_h: T.handle, acc_h: T.handle) -> None:
        pat = T.match_buffer(pat_h, (half,), PATTERN_DTYPE, offset_factor=1)
        lo = T.match_buffer(lo_h, (TABLE_ENTRIES,), LOW_DTYPE, offset_factor=1)
        hi = T.match_buffer(hi_h, (TABLE_ENTRIES,), HIGH_DTYPE, offset_factor=1)
        acc = T.match_buffer(acc_h, (lanes,), ACC_DTYPE, offset_factor=1)
        with T.sblock("root"):
            T.reads(acc[0:lanes], pat[0:half], hi[0:TABLE_ENTRIES], lo[0:TABLE_ENTRIES])
            T.writes(acc[0:lanes])
            if describe:
                for n, k in T.grid(lanes, TABLE_ENTRIES):
                    with T.sblock("update"):
                        vn, vk = T.axis.remap("SR", [n, k])
                        acc[vn] = acc[vn] + T.Select(
                            nibble(lambda b: pat[b], vn, lanes) == vk,
                            table_entry(lo[vk], hi[vk]), T.int16(0))
            else:
                raw = pat.vload([0], f"uint8x{half}")
                low_nib = T.bitwise_and(raw, T.Broadcast(T.uint8(15), half))
                high_nib = T.shift_right(raw, T.Broadcast(T.uint8(4), half))
                index = T.reinterpret(f"int8x{lanes}",
                                      T.vectorcombine(f"uint8x{lanes}", low_nib, high_nib))
                low = T.call_llvm_pure_intrin(
                    f"int8x{lanes}", llvm_name,
                    broadcast_16(T.reinterpret("int8x16", lo.vload([0], "uint8x16")), lanes), index)
                high = T.call_llvm_pure_intrin(
                    f"int8x{lanes}", llvm_name, broadcast_16(hi.vload([0], "int8x16"), lanes), index)
                words_low = T.reinterpret(f"int16x{half}",
                                          T.Shuffle([low, high], _interleave(lanes, False)))
                words_high = T.reinterpret(f"int16x{half}",
                                           T.Shuffle([low, high], _interleave(lanes, True)))
                acc[T.ramp(0, 1, half)] = acc[T.ramp(0, 1, half)] + words_low
                acc[T.ramp(half, 1, half)] = acc[T.ramp(half, 1, half)] + words_high

    return func.with_attr("global_symbol", "desc" if describe else "impl")


# AVX-512BW word permute: the int16 table itself (16 words, twice in a zmm) indexed by the
# nibbles widened to words, 32 look-ups per ``vpermw`` with no byte split and no interleave; the
# low nibbles of the 32 bytes are columns 0..31, the high nibbles 32..63 (``word`` packing).
TMAC_PERMW_AVX512 = "lut_tvm_tmac_permw_avx512"
TMAC_PERMW_LANES = 64
LLVM_PERMW = "llvm.x86.avx512.permvar.hi.512"
WORD_DTYPE = "int16"


def _word_func(describe: bool):
    lanes, half = TMAC_PERMW_LANES, TMAC_PERMW_LANES // 2

    @T.prim_func(s_tir=True)
    def func(pat_h: T.handle, tab_h: T.handle, acc_h: T.handle) -> None:
        pat = T.match_buffer(pat_h, (half,), PATTERN_DTYPE, offset_factor=1)
        tab = T.match_buffer(tab_h, (TABLE_ENTRIES,), WORD_DTYPE, offset_factor=1)
        acc = T.match_buffer(acc_h, (lanes,), ACC_DTYPE, offset_factor=1)
        with T.sblock("root"):
            T.reads(acc[0:lanes], pat[0:half], tab[0:TABLE_ENTRIES])
            T.writes(acc[0:lanes])
            if describe:
                for n, k in T.grid(lanes, TABLE_ENTRIES):
                    with T.sblock("update"):
                        vn, vk = T.axis.remap("SR", [n, k])
                        acc[vn] = acc[vn] + T.Select(
                            nibble(lambda b: pat[b], vn, lanes, True) == vk, tab[vk], T.int16(0))
            else:
                raw = pat.vload([0], f"uint8x{half}")
                table = tab.vload([0], "int16x16")
                both = T.vectorcombine("int16x32", table, table)
                low = T.Cast("int16x32", T.bitwise_and(raw, T.Broadcast(T.uint8(15), half)))
                high = T.Cast("int16x32", T.shift_right(raw, T.Broadcast(T.uint8(4), half)))
                acc[T.ramp(0, 1, half)] = acc[T.ramp(0, 1, half)] + T.call_llvm_pure_intrin(
                    "int16x32", LLVM_PERMW, both, low)
                acc[T.ramp(half, 1, half)] = acc[T.ramp(half, 1, half)] + T.call_llvm_pure_intrin(
                    "int16x32", LLVM_PERMW, both, high)

    return func.with_attr("global_symbol", "desc" if describe else "impl")


@functools.cache
def register_tmac_intrinsics() -> None:
    """Register the intrinsics once, on first use (TVMScript parsing is slow)."""
    for name, lanes in TMAC_LANES.items():
        TensorIntrin.register(name, _func(lanes), _func(lanes, TMAC_LLVM_SHUFFLE[name]),
                              override=True)
    TensorIntrin.register(TMAC_PERMW_AVX512, _word_func(True), _word_func(False), override=True)


def tmac_intrin_for_target(target, word: bool = False) -> str | None:
    """The widest T-MAC intrinsic ``target`` has (AVX-512BW zmm, else AVX2 ymm, else NEON
    ``tbl``: the byte shuffle of ``target_features(target).shuffle_lanes``), or None; ``word``:
    the word-permute intrinsic (AVX-512BW only)."""
    features = target_features(target)
    if word:
        name = TMAC_PERMW_AVX512 if features.arch == "x86" and features.has("avx512bw") else None
    else:
        name = _BY_SHUFFLE_LANES.get(features.shuffle_lanes)
    if name is None:
        return None
    register_tmac_intrinsics()
    return name


def tmac_form_for_target(target) -> tuple[int, bool] | None:
    """``(lanes, word)`` of the fastest T-MAC form ``target`` runs, or None: the word permute on
    AVX-512BW (measured faster than the zmm byte shuffle: 128 x 384 x 384, one thread, CPU
    time, 84 vs 110 us at 2 bits), the ymm byte shuffle on AVX2, ``tbl`` on NEON."""
    if tmac_intrin_for_target(target, word=True):
        return TMAC_PERMW_LANES, True
    intrin = tmac_intrin_for_target(target)
    return (TMAC_LANES[intrin], False) if intrin else None
