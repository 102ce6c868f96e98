"""Byte-shuffle tensor intrinsics for a K = 16 INT8 table lookup with int16 accumulation.

One intrinsic call performs ``L`` lookups into one 16-byte table column (one output channel
``n`` and one codebook ``c``) indexed by the codes of ``L`` consecutive rows, and adds the
looked-up bytes, sign-extended, into ``L`` int16 accumulators:

    for m in range(L), k in range(16):
        acc[m] += Select(int32(codes[m]) == k, int16(tab[k]), 0)

This is the one-hot form that ``tensorize`` can match (a direct gather ``tab[codes[m]]``
cannot be matched). The implementations use one byte shuffle per call:

* AVX-512BW ``vpshufb`` zmm, ``L = 64``: the 16-byte column is broadcast to all four 128-bit
  lanes (``vpshufb`` shuffles within each 128-bit lane).
* AVX2 ``vpshufb`` ymm, ``L = 32``: the column is broadcast to both lanes.
* NEON ``tbl`` (one-register table), ``L = 16``.

The shuffle implementations read only the low 4 bits of a code (``vpshufb`` also zeroes a
lane whose code has bit 7 set), so they equal the description for codes in ``[0, 16)``, which
is the only range a K = 16 encoder produces.
"""

from __future__ import annotations

import functools

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from ._common import TABLE_ENTRIES, broadcast_16, one_hot_desc, vector_impl

LUT16_SHUFFLE_AVX512 = "lut_tvm_lut16_shuffle_avx512"
LUT16_SHUFFLE_AVX2 = "lut_tvm_lut16_shuffle_avx2"
LUT16_SHUFFLE_NEON = "lut_tvm_lut16_shuffle_neon"

# Rows (lookups) per intrinsic call.
LUT16_SHUFFLE_LANES = {LUT16_SHUFFLE_AVX512: 64, LUT16_SHUFFLE_AVX2: 32, LUT16_SHUFFLE_NEON: 16}

# The LLVM intrinsic each implementation calls (tests look for these names in the TIR).
LLVM_SHUFFLE = {
    LUT16_SHUFFLE_AVX512: "llvm.x86.avx512.pshuf.b.512",
    LUT16_SHUFFLE_AVX2: "llvm.x86.avx2.pshuf.b",
    LUT16_SHUFFLE_NEON: "llvm.aarch64.neon.tbl1",
}

NUM_CENTROIDS = TABLE_ENTRIES
CODE_DTYPE = "uint8"
TABLE_DTYPE = "int8"
ACC_DTYPE = "int16"


def _desc(lanes: int):
    return one_hot_desc(lanes, CODE_DTYPE, TABLE_DTYPE, ACC_DTYPE,
                        lambda entry: T.Cast(ACC_DTYPE, entry))


def _impl(lanes: int, llvm_name: str):
    """One byte shuffle over ``lanes`` bytes (``vpshufb``: the column broadcast to every
    128-bit lane; ``tbl``: ``lanes = 16``), widened and added."""
    byte_vec = f"int8x{lanes}"

    def shuffle(codes, tab):
        return T.call_llvm_pure_intrin(
            byte_vec,
            llvm_name,
            broadcast_16(tab.vload([0], f"int8x{NUM_CENTROIDS}"), lanes),
            T.reinterpret(byte_vec, codes.vload([0], f"uint8x{lanes}")),
        )

    return vector_impl(lanes, CODE_DTYPE, TABLE_DTYPE, ACC_DTYPE, shuffle,
                       lambda looked_up, _: T.Cast(f"{ACC_DTYPE}x{lanes}", looked_up))


@functools.cache
def register_lut_shuffle_intrinsics() -> None:
    """Register the three intrinsics with TVM (once)."""
    for name, lanes in LUT16_SHUFFLE_LANES.items():
        TensorIntrin.register(name, _desc(lanes), _impl(lanes, LLVM_SHUFFLE[name]), override=True)


# At import, not lazily as in ``exact_shuffle``: ``lut_tvm.tuning.tune.open_database`` imports
# this module so that loading a tuning database (which replays the records' traces) finds them.
register_lut_shuffle_intrinsics()


def _target_attrs(target) -> tuple[str, str, str]:
    attrs = {str(k): v for k, v in target.attrs.items()} if target.attrs else {}
    mattr = attrs.get("mattr", "")
    mattr = ",".join(str(x) for x in mattr) if not isinstance(mattr, str) else mattr
    return str(attrs.get("mcpu", "")), mattr, str(attrs.get("mtriple", ""))


_AVX512BW_CPUS = (
    "skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client",
    "icelake-server", "tigerlake", "sapphirerapids", "emeraldrapids", "graniterapids",
    "rocketlake", "alderlake-avx512", "znver4", "znver5", "x86-64-v4",
)
_AVX2_CPUS = (
    "haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake", "znver1",
    "znver2", "znver3", "x86-64-v3", "core-avx2",
)


def shuffle_intrin_for_target(target) -> str | None:
    """The widest shuffle intrinsic ``target`` supports, or None (no SSSE3-class shuffle known).

    Decided from the target's ``mtriple``/``mcpu``/``mattr`` only (not the host CPU): the
    target says what the generated code may use.
    """
    mcpu, mattr, mtriple = _target_attrs(target)
    if mtriple.startswith(("aarch64", "arm64")) or "+neon" in mattr:
        return LUT16_SHUFFLE_NEON
    if str(target.kind.name) != "llvm":
        return None
    if "+avx512bw" in mattr or mcpu in _AVX512BW_CPUS:
        return LUT16_SHUFFLE_AVX512
    if "+avx2" in mattr or mcpu in _AVX2_CPUS or mcpu in _AVX512BW_CPUS:
        return LUT16_SHUFFLE_AVX2
    return None
