"""T-MAC layout of the exact look-up in NumPy: mirror-built tables, weights packed as nibbles.

The arithmetic is ``lut_tvm.exact.reference``'s (bit planes x 16-entry tables of groups of 4
int8 activations), in the layout the T-MAC kernel (``schedules.tmac_compute``) reads:

* **tables** built per call, 8 entries computed and 8 mirrored: for {0, 1} planes (b >= 2,
  two's complement) ``T[15 - k] = S - T[k]`` with ``S = T[15]`` the group sum; for the single
  {-1, +1} plane of 1-bit weights ``Ts[k] = 2 T[k] - S`` and ``Ts[15 - k] = -Ts[k]``. Both
  satisfy ``|T| <= 508``: they stay exact as int16, split into a low byte (uint8) and a high
  byte (int8, ``T = 256 hi + lo``) for the byte shuffle (no table quantization);
* **weights** packed offline: per bit plane, per tile of ``L`` output columns (``L`` = 16 for
  NEON ``tbl``, 32 for ``vpshufb`` ymm, 64 for zmm) and per group, ``L / 2`` bytes of two
  4-bit patterns each, in the order the kernel unpacks them (``nibble_position``): after the
  two byte shuffles, the in-lane interleave of the low and high results (``vpunpcklbw`` /
  ``vpunpckhbw``; NEON ``zip1`` / ``zip2``) yields the int16 look-ups of columns ``0 .. L-1``
  of the tile in order;
* 1-bit weights are {-1, +1} (``w = 2 p - 1``: one plane, signed table); ternary {-1, 0, +1}
  weights are 2-bit weights (planes ``1, -2``); ``b`` in 2..8 as in ``reference``.

Accumulation: int16 over chunks of at most ``SAFE_GROUPS = 64`` groups (``64 * 508 < 2^15``),
then int32; planes recombined by shift-and-add (``plane_coefficients``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .quant import GROUP, INT32_MAX, INT32_MIN, TABLE_ENTRIES, check_bits
from .tables import activation_tables, bit_planes, group_patterns, num_groups, plane_coefficients

TMAC_LANES = (16, 32, 64)  # columns per look-up: NEON tbl, vpshufb ymm, vpshufb zmm
SAFE_GROUPS = 64  # groups summed in int16 before widening: 64 * 508 < 2^15
HALF = TABLE_ENTRIES // 2
TMAC_BITS = (1, 2, 3, 4, 5, 6, 7, 8)


def check_tmac_bits(bits: int) -> int:
    """``bits`` as an int in [1, 8] (1: {-1, +1} weights); ValueError otherwise."""
    if int(bits) != bits or int(bits) not in TMAC_BITS:
        raise ValueError(f"T-MAC weight bits must be an integer in [1, 8], got {bits!r}")
    return int(bits)


def direct_tables(xq: np.ndarray, signed: bool = False) -> np.ndarray:
    """All 16 entries computed directly: ``T[m, g, k] = sum_i s_i(k) xq[m, 4g + i]`` int16
    ``[M, Gc, 16]`` with ``s_i(k) = bit_i(k)`` (or ``2 bit_i(k) - 1`` when ``signed``)."""
    table = activation_tables(xq).astype(np.int64)
    if signed:
        table = 2 * table - table[..., -1:]
    return table.astype(np.int16)


def mirror_tables(xq: np.ndarray, signed: bool = False, groups: int | None = None) -> np.ndarray:
    """The same tables as ``direct_tables`` (``groups``: zero groups appended up to that count),
    with entries 0..7 computed and 8..15 mirrored from them."""
    xq = np.asarray(xq)
    rows, depth = xq.shape
    groups = num_groups(depth) if groups is None else groups
    padded = np.zeros((rows, groups * GROUP), dtype=np.int64)
    padded[:, :depth] = xq
    x = padded.reshape(rows, groups, GROUP)
    low = np.arange(HALF)
    bits3 = (low[:, None] >> np.arange(GROUP - 1)[None]) & 1  # [8, 3]: entries 0..7 use x0..x2
    half = x[..., : GROUP - 1] @ bits3.T  # [M, Gc, 8]
    total = x.sum(axis=-1, keepdims=True)
    if signed:
        half = 2 * half - total
        upper = -half[..., ::-1]
    else:
        upper = total - half[..., ::-1]
    return np.concatenate([half, upper], axis=-1).astype(np.int16)


def split_table_bytes(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lo uint8, hi int8)`` with ``table = 256 * hi + lo`` (exact for int16 tables)."""
    table = np.asarray(table, dtype=np.int16)
    return (table & 255).astype(np.uint8), (table >> 8).astype(np.int8)


def nibble_position(lane: int, lanes: int, word: bool = False) -> tuple[int, int]:
    """``(byte, shift)``: where column ``lane`` of a tile of ``lanes`` reads its 4-bit pattern.

    The kernel loads ``lanes / 2`` bytes; their low nibbles become shuffle positions
    ``0 .. lanes/2 - 1``, the high nibbles ``lanes/2 .. lanes - 1``; the interleave of the two
    shuffle results per 128-bit lane puts position ``16 l + 8 h + e`` in int16 word
    ``h lanes/2 + 8 l + e`` (``h`` 0: unpack-low, 1: unpack-high). Inverted: lane =
    ``h lanes/2 + s lanes/4 + 8 r + e`` reads byte ``16 r + 8 h + e`` at shift ``4 s``.

    ``word`` (the int16 word-permute form, ``vpermw``): the low nibbles widened to words are
    columns ``0 .. lanes/2 - 1``, the high nibbles the rest: byte ``lane % (lanes/2)``. With
    16 lanes (NEON ``tbl``, one 128-bit register) the interleave gives that same order: ``zip1``
    makes the words of shuffle positions 0..7 (the low nibbles: columns 0..7), ``zip2`` those
    of positions 8..15 (the high nibbles: columns 8..15)."""
    if word or lanes == 16:
        return lane % (lanes // 2), 4 * (lane // (lanes // 2))
    quarter = lanes // 4
    h, rest = divmod(lane, lanes // 2)
    s, rest = divmod(rest, quarter)
    r, e = divmod(rest, 8)
    return 16 * r + 8 * h + e, 4 * s


def tmac_planes(wq: np.ndarray, bits: int) -> np.ndarray:
    """uint8 planes ``[b, D, N]``: two's complement for b >= 2, ``(w + 1) / 2`` for 1-bit {-1, +1}."""
    wq = np.asarray(wq)
    if check_tmac_bits(bits) > 1:
        return bit_planes(wq, bits)
    if wq.size and not np.isin(wq, (-1, 1)).all():
        raise ValueError("1-bit weights must all be -1 or +1")
    return (wq > 0).astype(np.uint8)[None]


def tmac_coefficients(bits: int) -> np.ndarray:
    """The weight of each plane's look-up sum (1 for the single signed plane of 1-bit weights)."""
    return np.ones(1, np.int64) if check_tmac_bits(bits) == 1 else plane_coefficients(bits)


def chunk_groups(groups: int, safe: int = SAFE_GROUPS) -> tuple[int, int]:
    """``(chunks, groups per chunk)``: at most ``safe`` groups per chunk, chunks equal in length."""
    chunks = max(1, -(-groups // safe))
    return chunks, -(-groups // chunks)


@dataclass
class TmacPacked:
    """A quantized weight in the T-MAC kernel's layout.

    ``nibbles [b, NT, Gp, L/2]`` uint8: plane ``j``, column tile ``t``, group ``g``: byte
    ``nibble_position(l)[0]`` holds column ``t L + l``'s pattern at that shift. ``Gp`` is the
    group count padded to whole chunks (``chunk_groups``) and ``NT L >= N`` (padding columns
    and groups have pattern 0, which the tail-free tables turn into 0)."""

    bits: int
    depth: int
    out_features: int
    lanes: int
    nibbles: np.ndarray
    word: bool = False  # laid out for the word-permute form (``nibble_position``)

    @property
    def signed(self) -> bool:
        return self.bits == 1

    @property
    def tiles(self) -> int:
        return int(self.nibbles.shape[1])

    @property
    def padded_groups(self) -> int:
        return int(self.nibbles.shape[2])


def lane_order(lanes: int, word: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(byte [L], shift [L])`` arrays of ``nibble_position`` for every lane of a tile."""
    pairs = np.array([nibble_position(lane, lanes, word) for lane in range(lanes)], dtype=np.int64)
    return pairs[:, 0], pairs[:, 1]


def pack_tmac(wq: np.ndarray, bits: int, lanes: int = 64, word: bool = False) -> TmacPacked:
    """``Wq [D, N]`` -> bit planes -> 4-bit group patterns -> nibble bytes in kernel order."""
    wq = np.asarray(wq)
    if wq.ndim != 2:
        raise ValueError(f"quantized weight must be [D, N], got shape {wq.shape}")
    if lanes not in TMAC_LANES:
        raise ValueError(f"T-MAC lanes must be one of {TMAC_LANES}, got {lanes!r}")
    depth, cols = wq.shape
    patterns = group_patterns(tmac_planes(wq, bits))  # [b, Gc, N]
    chunks, per_chunk = chunk_groups(patterns.shape[1])
    tiles = -(-cols // lanes)
    dense = np.zeros((patterns.shape[0], chunks * per_chunk, tiles * lanes), dtype=np.uint8)
    dense[:, : patterns.shape[1], :cols] = patterns
    tiled = dense.reshape(dense.shape[0], dense.shape[1], tiles, lanes).transpose(0, 2, 1, 3)
    byte, shift = lane_order(lanes, word)
    nibbles = np.zeros((*tiled.shape[:3], lanes // 2), dtype=np.uint8)
    for lane in range(lanes):
        nibbles[..., byte[lane]] |= (tiled[..., lane] << shift[lane]).astype(np.uint8)
    return TmacPacked(check_tmac_bits(bits), int(depth), int(cols), lanes, nibbles, word)


def unpack_patterns(packed: TmacPacked) -> np.ndarray:
    """uint8 ``[b, Gp, NT * L]`` patterns read back the way the kernel reads them."""
    byte, shift = lane_order(packed.lanes, packed.word)
    lanes = (packed.nibbles[..., byte] >> shift.astype(np.uint8)) & 15  # [b, NT, Gp, L]
    return lanes.transpose(0, 2, 1, 3).reshape(lanes.shape[0], lanes.shape[2], -1)


def tmac_matmul(xq: np.ndarray, packed: TmacPacked) -> np.ndarray:
    """``xq @ Wq`` int32 the kernel's way: mirror tables, int16 chunk sums, shift-and-add."""
    xq = np.asarray(xq)
    if xq.ndim != 2 or xq.shape[1] != packed.depth:
        raise ValueError(f"activations {xq.shape} do not match a weight of depth {packed.depth}")
    tables = mirror_tables(xq, packed.signed, packed.padded_groups).astype(np.int64)
    patterns = unpack_patterns(packed)  # [b, Gp, Npad]
    chunks, per_chunk = chunk_groups(packed.padded_groups)
    groups = np.arange(packed.padded_groups)[:, None]
    coef = tmac_coefficients(packed.bits)
    acc = np.zeros((xq.shape[0], patterns.shape[2]), dtype=np.int64)
    for plane in range(patterns.shape[0]):
        picked = tables[:, groups, patterns[plane]]  # [M, Gp, Npad]
        for chunk in range(chunks):
            part = picked[:, chunk * per_chunk:(chunk + 1) * per_chunk].sum(axis=1)
            if part.size and np.abs(part).max() >= 2 ** 15:
                raise OverflowError("an int16 chunk sum overflowed")
            acc += coef[plane] * part
    acc = acc[:, : packed.out_features]
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError("T-MAC result does not fit int32")
    return acc.astype(np.int32)
