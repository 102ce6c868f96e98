"""AVX-512 VBMI ``vpermb`` tensor intrinsics for the K = 32 / 64 shuffle lookup, and the choice of
lookup intrinsic by target and K.

The K = 16 lookup (``schedules.intrin.lut_shuffle``) holds one 16-byte table column per 128-bit
lane and looks it up with ``vpshufb``, which reads 4 bits of each code. AVX-512 VBMI's
``vpermb`` (``llvm.x86.avx512.permvar.qi.512``) looks up 64 bytes across the whole zmm register
with 6 bits of each code, so one call does the 64 lookups of a 64-row block into a 64-entry
column (K = 64), or into a 32-entry column repeated twice (K = 32: codes < 32 read the first
copy). Everything else is the K = 16 kernel's: the codes permuted into row pairs, the column
biased to ``T + 128``, the 32 looked-up words added to ``S`` and shifted right by 8 into ``H``
(``word_sum_lookup_func``; the description is the same one-hot form over ``k < K``). The word
sums stay exact for the same reason as at K = 16 (``schedules.lut_shuffle_compute``): one biased
byte per row and codebook, at most 256 codebooks per uint16 chunk, whatever K is.

``vpermi2b`` (two tables, 128 entries, 7 bits) would serve K = 128, which the optimizer does not
offer. For K = 32, two ymm ``vpermb`` (AVX512VL, ``llvm.x86.avx512.permvar.qi.256``, the column
not repeated) per block measured 1.05-1.15x slower than one zmm ``vpermb`` of the repeated column
(M = 128, N = 384, C = 24 / 96 / 192, one thread, Zen 4, load average 8 on 2 cores), so the zmm
form serves both K.
"""

from __future__ import annotations

import functools

from lut_tvm.target_features import target_features

from .lut_shuffle import (
    NUM_CENTROIDS,
    shuffle_intrin_for_target,
    word_sum_lookup_func,
)
from .registry import declare

LUT32_VBMI = "lut_tvm_lut32_vbmi"
LUT64_VBMI = "lut_tvm_lut64_vbmi"
# The intrinsic of each K that needs VBMI.
VBMI_INTRIN = {32: LUT32_VBMI, 64: LUT64_VBMI}
# The LLVM intrinsic both implementations call (tests look for it in the TIR).
LLVM_PERMUTE = "llvm.x86.avx512.permvar.qi.512"
VBMI_LANES = 64  # one vpermb per 64-row block (``lut_shuffle.ROWS_PER_CALL``)


def _vbmi_pair(entries: int) -> tuple:
    return (word_sum_lookup_func(None, entries=entries),
            word_sum_lookup_func(VBMI_LANES, LLVM_PERMUTE, entries=entries))


for _entries, _name in VBMI_INTRIN.items():  # the K = 32 and K = 64 ``vpermb`` intrinsics, registered on first use
    declare(_name, functools.partial(_vbmi_pair, _entries))


def lookup_intrin_for_target(target, num_centroids: int) -> str | None:
    """The lookup intrinsic for tables of ``num_centroids`` entries on ``target``, or None: the
    widest 16-entry shuffle for K = 16, ``vpermb`` for K = 32 / 64 where the target has AVX-512
    VBMI (``target_features(...).byte_permute_128``), else None."""
    if num_centroids == NUM_CENTROIDS:
        return shuffle_intrin_for_target(target)
    if num_centroids in VBMI_INTRIN and target_features(target).byte_permute_128:
        return VBMI_INTRIN[num_centroids]
    return None


def shuffle_centroids(target) -> tuple[int, ...]:
    """The K values whose lookup runs on a shuffle / permute instruction of ``target``:
    ``(16, 32, 64)`` with AVX-512 VBMI, ``(16,)`` with a 16-byte shuffle only, else ``()``."""
    return tuple(k for k in (NUM_CENTROIDS, *VBMI_INTRIN) if lookup_intrin_for_target(target, k))
