"""uint8 x int8 -> int32 dot-product tensor intrinsics of the int8 dense kernel, and which one a target gets.

Every intrinsic computes ``C[i] += int32(A[k]) * int32(B[i, k])`` for ``L`` output lanes ``i`` and
``R`` depths ``k`` (``A [R]`` uint8 activations, ``B [L, R]`` int8 packed weights, ``C [L]`` int32):

* AVX-512 VNNI: ``vpdpbusd`` zmm, ``L = 16``, ``R = 4``: TVM's own ``dot_16x4_vnni`` with the
  operand types of the LLVM that TVM 0.27's wheel links (LLVM 20 declares
  ``llvm.x86.avx512.vpdpbusd.512`` on ``<64 x i8>``; TVM's passes ``<16 x i32>`` and fails to build);
* AVX-512BW: ``vpmaddwd`` zmm on both operands widened to int16, ``L = 16``, ``R = 2``;
* AVX2: ``vpmaddwd`` ymm the same way, ``L = 8``, ``R = 2``.

The widened forms are exact for every uint8 x int8 pair; ``vpmaddubsw`` (TVM's
``dot_16x4_avx512``) is not used by the dense layer on 8-bit activations because its int16 pair
sums saturate (2 * 255 * 127 > 32767). On 7-bit activations (``act_bits`` 7: 0..127) they cannot
(2 * 127 * 127 = 32258), so without VNNI such a layer gets ``INT8_DOT4_AVX2`` /
``INT8_DOT4_AVX512BW`` below (``L = 8 / 16``, ``R = 4``), exact and with no widening of the
weights (``int8_layout_for_target(target, act_bits=7)``). A target with none of these gets the
``FALLBACK`` layout and no tensorization.

Each implementation is one expression: a named binding in them (``x = ...``) lowers to a local
allocation, i.e. a ``TVMBackendAllocWorkspace`` call per use (seen in the asm: three per row tile).

The int8 encode (``schedules.rules.lut_encode_rows_int8``) bounds its operands (uint8 <= 128,
int8 in [-128, 127], ``lut_tvm.int8_encode_reference``) so that ``vpmaddubsw`` cannot saturate
(|pair| <= 32768, and only -32768 reaches it): ``INT8_DOT4_AVX2`` / ``INT8_DOT4_AVX512BW``
(``L = 8 / 16``, ``R = 4``: ``vpmaddubsw``, ``vpmaddwd`` by ones, add), and VNNI where the target
has it (``encode_dot_for_target``). These are exact only for such bounded operands.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm.script import tirx as T

from lut_tvm.target_features import target_features

from .registry import declare

INT8_DOT_VNNI = "lut_tvm_int8_dot_16x4_vnni"
INT8_DOT_AVX512 = "lut_tvm_int8_dot_16x2_avx512bw"
INT8_DOT_AVX2 = "lut_tvm_int8_dot_8x2_avx2"
LLVM_VPDPBUSD = "llvm.x86.avx512.vpdpbusd.512"
INT8_DOT4_AVX2 = "lut_tvm_int8_dot4_8x4_avx2_bounded"
INT8_DOT4_AVX512BW = "lut_tvm_int8_dot4_16x4_avx512bw_bounded"
LLVM_PMADDUBSW = {INT8_DOT4_AVX2: "llvm.x86.avx2.pmadd.ub.sw", INT8_DOT4_AVX512BW: "llvm.x86.avx512.pmaddubs.w.512"}
LLVM_PMADDWD = {INT8_DOT4_AVX2: "llvm.x86.avx2.pmadd.wd", INT8_DOT4_AVX512BW: "llvm.x86.avx512.pmaddw.d.512",
                INT8_DOT_AVX512: "llvm.x86.avx512.pmaddw.d.512", INT8_DOT_AVX2: "llvm.x86.avx2.pmadd.wd"}


@dataclass(frozen=True)
class Int8Layout:
    """The packed weight's block ``[L, R]`` and the intrinsic (None: plain loops) that reads it."""

    lanes: int
    group: int
    intrin: str | None


FALLBACK = Int8Layout(8, 4, None)


def _desc(lanes: int, group: int):
    @T.prim_func(s_tir=True)
    def desc(a_h: T.handle, b_h: T.handle, c_h: T.handle) -> None:
        A = T.match_buffer(a_h, (group,), "uint8", offset_factor=1)
        B = T.match_buffer(b_h, (lanes, group), "int8", offset_factor=1)
        C = T.match_buffer(c_h, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:group], B[0:lanes, 0:group])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, group):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])

    return desc


def _pmaddwd_impl(lanes: int, llvm_name: str):
    wide = 2 * lanes

    @T.prim_func(s_tir=True)
    def impl(a_h: T.handle, b_h: T.handle, c_h: T.handle) -> None:
        A = T.match_buffer(a_h, (2,), "uint8", offset_factor=1)
        B = T.match_buffer(b_h, (lanes, 2), "int8", offset_factor=1)
        C = T.match_buffer(c_h, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:2], B[0:lanes, 0:2])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = C[T.ramp(T.int32(0), 1, lanes)] + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name),
                T.reinterpret(T.broadcast(T.reinterpret(T.Cast("int16x2", A.vload([0], "uint8x2")), dtype="int32"),
                                          lanes), dtype=f"int16x{wide}"),
                T.Cast(f"int16x{wide}", B.vload([0, 0], f"int8x{wide}")), dtype=f"int32x{lanes}")

    return impl


def _vnni_impl():
    @T.prim_func(s_tir=True)
    def impl(a_h: T.handle, b_h: T.handle, c_h: T.handle) -> None:
        A = T.match_buffer(a_h, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b_h, (16, 4), "int8", offset_factor=1)
        C = T.match_buffer(c_h, (16,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(LLVM_VPDPBUSD), C.vload([0], "int32x16"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16), dtype="int8x64"),
                B.vload([0, 0], "int8x64"), dtype="int32x16")

    return impl


def _pmaddubsw_impl(lanes: int, name: str):
    """``C += pmaddwd(pmaddubsw(broadcast A, B), 1)``: exact while no int16 pair sum saturates."""

    @T.prim_func(s_tir=True)
    def impl(a_h: T.handle, b_h: T.handle, c_h: T.handle) -> None:
        A = T.match_buffer(a_h, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b_h, (lanes, 4), "int8", offset_factor=1)
        C = T.match_buffer(c_h, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            # one expression: a named binding here would become a per-call workspace allocation
            C[T.ramp(T.int32(0), 1, lanes)] = C[T.ramp(T.int32(0), 1, lanes)] + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(LLVM_PMADDWD[name]),
                T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(LLVM_PMADDUBSW[name]),
                    T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), lanes),
                                  dtype=f"int8x{4 * lanes}"),
                    B.vload([0, 0], f"int8x{4 * lanes}"), dtype=f"int16x{2 * lanes}"),
                T.broadcast(T.int16(1), 2 * lanes), dtype=f"int32x{lanes}")

    return impl


# Registered on first use (``registry.ensure``), each as (description, implementation).
declare(INT8_DOT_VNNI, lambda: (_desc(16, 4), _vnni_impl()))
declare(INT8_DOT_AVX512, lambda: (_desc(16, 2), _pmaddwd_impl(16, LLVM_PMADDWD[INT8_DOT_AVX512])))
declare(INT8_DOT_AVX2, lambda: (_desc(8, 2), _pmaddwd_impl(8, LLVM_PMADDWD[INT8_DOT_AVX2])))
declare(INT8_DOT4_AVX2, lambda: (_desc(8, 4), _pmaddubsw_impl(8, INT8_DOT4_AVX2)))
declare(INT8_DOT4_AVX512BW, lambda: (_desc(16, 4), _pmaddubsw_impl(16, INT8_DOT4_AVX512BW)))


def int8_layout_for_target(target, act_bits: int = 8) -> Int8Layout:
    """The fastest layout ``target`` runs exactly on activations of ``act_bits`` (8: 0..255, 7:
    0..127): VNNI, then AVX-512BW, then AVX2 (``vpmaddwd`` on widened operands at 8 bits,
    ``vpmaddubsw`` at 7), else FALLBACK."""
    features = target_features(target)
    if features.arch != "x86":
        return FALLBACK
    if features.has("avx512vnni") and features.has("avx512bw"):
        return Int8Layout(16, 4, INT8_DOT_VNNI)
    seven = int(act_bits) == 7
    if features.has("avx512bw"):
        return Int8Layout(16, 4, INT8_DOT4_AVX512BW) if seven else Int8Layout(16, 2, INT8_DOT_AVX512)
    if features.has("avx2"):
        return Int8Layout(8, 4, INT8_DOT4_AVX2) if seven else Int8Layout(8, 2, INT8_DOT_AVX2)
    return FALLBACK

def preferred_act_bits(target) -> int:
    """The int8 dense layer's activation width to offer on ``target``: 7 where 7-bit activations get
    a faster exact kernel (``vpmaddubsw`` instead of widening to ``vpmaddwd``: AVX2 or AVX-512BW
    without VNNI), else 8 (VNNI's ``vpdpbusd`` takes 0..255 at the same speed; other CPUs run
    plain loops either way)."""
    return 7 if int8_layout_for_target(target, 7).intrin in (INT8_DOT4_AVX2, INT8_DOT4_AVX512BW) else 8


def encode_dot_for_target(target) -> Int8Layout:
    """The int8 encode's dot (``R = 4``, bounded operands): VNNI, then AVX-512BW / AVX2
    ``vpmaddubsw``, else plain loops over 8 rows."""
    features = target_features(target)
    if features.arch != "x86":
        return FALLBACK
    if features.has("avx512vnni") and features.has("avx512bw"):
        return Int8Layout(16, 4, INT8_DOT_VNNI)
    if features.has("avx512bw"):
        return Int8Layout(16, 4, INT8_DOT4_AVX512BW)
    if features.has("avx2"):
        return Int8Layout(8, 4, INT8_DOT4_AVX2)
    return FALLBACK
