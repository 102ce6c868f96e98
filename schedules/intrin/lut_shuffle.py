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

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

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

NUM_CENTROIDS = 16
CODE_DTYPE = "uint8"
TABLE_DTYPE = "int8"
ACC_DTYPE = "int16"


def _desc(lanes: int):
    @T.prim_func(s_tir=True)
    def desc(codes_h: T.handle, tab_h: T.handle, acc_h: T.handle) -> None:
        codes = T.match_buffer(codes_h, (lanes,), CODE_DTYPE, offset_factor=1)
        tab = T.match_buffer(tab_h, (NUM_CENTROIDS,), TABLE_DTYPE, offset_factor=1)
        acc = T.match_buffer(acc_h, (lanes,), ACC_DTYPE, offset_factor=1)
        with T.sblock("root"):
            T.reads(acc[0:lanes], codes[0:lanes], tab[0:NUM_CENTROIDS])
            T.writes(acc[0:lanes])
            for m, k in T.grid(lanes, NUM_CENTROIDS):
                with T.sblock("update"):
                    vm, vk = T.axis.remap("SR", [m, k])
                    acc[vm] = acc[vm] + T.Select(
                        T.Cast("int32", codes[vm]) == vk,
                        T.Cast(ACC_DTYPE, tab[vk]),
                        T.int16(0),
                    )

    return desc


def _x86_impl(lanes: int, llvm_name: str):
    """``vpshufb`` over ``lanes`` bytes: broadcast the column, shuffle, widen, add."""
    byte_vec = f"int8x{lanes}"
    wide_vec = f"{ACC_DTYPE}x{lanes}"

    def broadcast_column(column):
        # vectorcombine concatenates two vectors; doubling 16 bytes to 32 (and to 64).
        wide = column
        width = NUM_CENTROIDS
        while width < lanes:
            width *= 2
            wide = T.vectorcombine(f"int8x{width}", wide, wide)
        return wide

    @T.prim_func(s_tir=True)
    def impl(codes_h: T.handle, tab_h: T.handle, acc_h: T.handle) -> None:
        codes = T.match_buffer(codes_h, (lanes,), CODE_DTYPE, offset_factor=1)
        tab = T.match_buffer(tab_h, (NUM_CENTROIDS,), TABLE_DTYPE, offset_factor=1)
        acc = T.match_buffer(acc_h, (lanes,), ACC_DTYPE, offset_factor=1)
        with T.sblock("root"):
            T.reads(acc[0:lanes], codes[0:lanes], tab[0:NUM_CENTROIDS])
            T.writes(acc[0:lanes])
            looked_up = T.call_llvm_pure_intrin(
                byte_vec,
                llvm_name,
                broadcast_column(tab.vload([0], f"int8x{NUM_CENTROIDS}")),
                T.reinterpret(byte_vec, codes.vload([0], f"uint8x{lanes}")),
            )
            acc[T.ramp(0, 1, lanes)] = acc[T.ramp(0, 1, lanes)] + T.Cast(wide_vec, looked_up)

    return impl


def _neon_impl():
    lanes = 16

    @T.prim_func(s_tir=True)
    def impl(codes_h: T.handle, tab_h: T.handle, acc_h: T.handle) -> None:
        codes = T.match_buffer(codes_h, (lanes,), CODE_DTYPE, offset_factor=1)
        tab = T.match_buffer(tab_h, (NUM_CENTROIDS,), TABLE_DTYPE, offset_factor=1)
        acc = T.match_buffer(acc_h, (lanes,), ACC_DTYPE, offset_factor=1)
        with T.sblock("root"):
            T.reads(acc[0:lanes], codes[0:lanes], tab[0:NUM_CENTROIDS])
            T.writes(acc[0:lanes])
            looked_up = T.call_llvm_pure_intrin(
                "int8x16",
                "llvm.aarch64.neon.tbl1",
                tab.vload([0], "int8x16"),
                T.reinterpret("int8x16", codes.vload([0], "uint8x16")),
            )
            acc[T.ramp(0, 1, lanes)] = acc[T.ramp(0, 1, lanes)] + T.Cast("int16x16", looked_up)

    return impl


TensorIntrin.register(
    LUT16_SHUFFLE_AVX512, _desc(64), _x86_impl(64, LLVM_SHUFFLE[LUT16_SHUFFLE_AVX512]), override=True
)
TensorIntrin.register(
    LUT16_SHUFFLE_AVX2, _desc(32), _x86_impl(32, LLVM_SHUFFLE[LUT16_SHUFFLE_AVX2]), override=True
)
TensorIntrin.register(LUT16_SHUFFLE_NEON, _desc(16), _neon_impl(), override=True)


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
