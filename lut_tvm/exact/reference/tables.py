"""The exact LUT decomposition in NumPy: bit planes, 4-bit group patterns, 16-entry activation
tables, the column-wise skip lists (``ExactPacked``) and the look-up matmuls built on them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .quant import GROUP, INT32_MAX, INT32_MIN, check_bits


def num_groups(depth: int, group: int = GROUP) -> int:
    """``ceil(D / group)``."""
    return -(-int(depth) // group)


def _check_weight_range(wq: np.ndarray, bits: int) -> None:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if wq.size and (wq.min() < low or wq.max() > high):
        raise ValueError(f"quantized weights span [{wq.min()}, {wq.max()}], outside the "
                         f"{bits}-bit range [{low}, {high}]")


def bit_planes(wq: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement bit planes ``[b, D, N]`` (uint8 0/1) of ``wq``; plane b-1 is the sign."""
    bits = check_bits(bits)
    wq = np.asarray(wq)
    _check_weight_range(wq, bits)
    unsigned = wq.astype(np.int64) & (2 ** bits - 1)
    shifts = np.arange(bits, dtype=np.int64).reshape(-1, 1, 1)
    return ((unsigned[None] >> shifts) & 1).astype(np.uint8)


def plane_coefficients(bits: int) -> np.ndarray:
    """``[1, 2, 4, ..., -2^(b-1)]`` (int64): the weight of each bit plane."""
    coef = 2 ** np.arange(check_bits(bits), dtype=np.int64)
    coef[-1] = -coef[-1]
    return coef


def group_patterns(planes: np.ndarray, group: int = GROUP) -> np.ndarray:
    """4-bit patterns ``[b, Gc, N]`` (uint8): bit ``i`` of ``pat[j, g, n]`` is ``p_j[4g+i, n]``."""
    count, depth, cols = planes.shape
    padded = np.zeros((count, num_groups(depth, group) * group, cols), dtype=np.int64)
    padded[:, :depth] = planes
    grouped = padded.reshape(count, -1, group, cols)
    weights = (1 << np.arange(group, dtype=np.int64)).reshape(1, 1, group, 1)
    return (grouped * weights).sum(axis=2).astype(np.uint8)


def _digit_matrix(group: int, piece_bits: int, signed_width: int | None = None) -> np.ndarray:
    """``[2^(group*piece_bits), group]``: digit ``i`` of every table index (signed if asked)."""
    entries = 2 ** (group * piece_bits)
    index = np.arange(entries, dtype=np.int64)[:, None]
    digits = (index >> (piece_bits * np.arange(group, dtype=np.int64))[None]) & (2 ** piece_bits - 1)
    if signed_width is not None:
        digits = np.where(digits >= 2 ** (signed_width - 1), digits - 2 ** signed_width, digits)
    return digits


def _grouped_activations(xq: np.ndarray, group: int) -> np.ndarray:
    rows, depth = xq.shape
    padded = np.zeros((rows, num_groups(depth, group) * group), dtype=np.int64)
    padded[:, :depth] = xq
    return padded.reshape(rows, -1, group)


def activation_tables(xq: np.ndarray, group: int = GROUP) -> np.ndarray:
    """``T[m, g, k] = sum_i bit_i(k) * xq[m, group*g + i]`` as int16 ``[M, Gc, 2^group]``."""
    xq = np.asarray(xq)
    tables = _grouped_activations(xq, group) @ _digit_matrix(group, 1).T
    return tables.astype(np.int16)


@dataclass
class ExactPacked:
    """A quantized weight in the compiled kernel's layout (column-wise skip lists of groups).

    ``group_index [Kmax, N]`` int32 lists, per column, the groups with a nonzero weight (then
    zeros); ``patterns [b, Kmax, N]`` uint8 are the matching bit-plane patterns (padding entries
    are pattern 0 of group 0, which adds ``T[m, 0, 0] = 0``). ``Kmax`` is the largest number of
    nonzero groups of any column (at least 1).
    """

    bits: int
    depth: int
    group_index: np.ndarray
    patterns: np.ndarray
    nonzero_groups: np.ndarray  # [Gc, N] bool

    @property
    def out_features(self) -> int:
        return int(self.group_index.shape[1])

    @property
    def max_groups(self) -> int:
        return int(self.group_index.shape[0])

    @property
    def num_groups(self) -> int:
        return int(self.nonzero_groups.shape[0])


def pack_exact(wq: np.ndarray, bits: int) -> ExactPacked:
    """Bit planes -> group patterns -> per-column skip lists of the nonzero groups."""
    wq = np.asarray(wq)
    if wq.ndim != 2:
        raise ValueError(f"quantized weight must be [D, N], got shape {wq.shape}")
    dense = group_patterns(bit_planes(wq, bits))  # [b, Gc, N]
    nonzero = (dense != 0).any(axis=0)  # [Gc, N]
    cols = wq.shape[1]
    kmax = max(1, int(nonzero.sum(axis=0).max(initial=0)))
    group_index = np.zeros((kmax, cols), dtype=np.int32)
    patterns = np.zeros((dense.shape[0], kmax, cols), dtype=np.uint8)
    for col in range(cols):
        kept = np.flatnonzero(nonzero[:, col])
        group_index[: kept.size, col] = kept
        patterns[:, : kept.size, col] = dense[:, kept, col]
    return ExactPacked(int(bits), int(wq.shape[0]), group_index, patterns, nonzero)


def plane_accumulators(xq: np.ndarray, packed: ExactPacked) -> np.ndarray:
    """``acc_j[m, n] = sum_e T[m, group_index[e, n], patterns[j, e, n]]`` as int64 ``[b, M, N]``."""
    xq = np.asarray(xq)
    if xq.ndim != 2 or xq.shape[1] != packed.depth:
        raise ValueError(f"activations {xq.shape} do not match a weight of depth {packed.depth}")
    tables = activation_tables(xq).astype(np.int64)  # [M, Gc, 16]
    out = np.empty((packed.bits, xq.shape[0], packed.out_features), dtype=np.int64)
    for plane in range(packed.bits):
        picked = tables[:, packed.group_index, packed.patterns[plane]]  # [M, Kmax, N]
        out[plane] = picked.sum(axis=1)
    return out


def exact_lut_matmul(xq: np.ndarray, packed: ExactPacked) -> np.ndarray:
    """``xq @ Wq`` by look-ups and shift-and-add over the bit planes (sign plane subtracted)."""
    planes = plane_accumulators(xq, packed)
    acc = np.zeros(planes.shape[1:], dtype=np.int64)
    for plane in range(packed.bits - 1):
        acc += planes[plane] << plane
    acc -= planes[-1] << (packed.bits - 1)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError("exact LUT result does not fit int32")
    return acc.astype(np.int32)


def piece_lut_matmul(xq: np.ndarray, wq: np.ndarray, bits: int, piece_bits: int) -> np.ndarray:
    """``xq @ Wq`` with ``piece_bits``-bit weight digits (1, 2 or 4) and 16-entry tables.

    ``G = 4 / piece_bits`` activations share a table indexed by ``G`` digits; the top digit of
    width ``r = b - (P-1) * piece_bits`` is signed (read from a second table whose digits are
    two's-complement ``r``-bit values). Zero groups are skipped per column.
    """
    bits = check_bits(bits)
    if piece_bits not in (1, 2, 4):
        raise ValueError(f"piece_bits must be 1, 2 or 4, got {piece_bits!r}")
    wq, xq = np.asarray(wq), np.asarray(xq)
    _check_weight_range(wq, bits)
    group = 4 // piece_bits
    pieces = -(-bits // piece_bits)
    top_width = bits - (pieces - 1) * piece_bits
    unsigned = wq.astype(np.int64) & (2 ** bits - 1)
    grouped = _grouped_activations(xq, group)  # [M, Gc, G]
    table_u = grouped @ _digit_matrix(group, piece_bits).T  # [M, Gc, 16]
    table_s = grouped @ _digit_matrix(group, piece_bits, top_width).T
    depth, cols = wq.shape
    padded = np.zeros((num_groups(depth, group) * group, cols), dtype=np.int64)
    padded[:depth] = unsigned
    grouped_w = padded.reshape(-1, group, cols)
    nonzero = (grouped_w != 0).any(axis=1)  # [Gc, N]
    acc = np.zeros((xq.shape[0], cols), dtype=np.int64)
    shifts = (piece_bits * np.arange(group, dtype=np.int64)).reshape(1, group, 1)
    for piece in range(pieces):
        digits = (grouped_w >> (piece * piece_bits)) & (2 ** piece_bits - 1)
        index = (digits << shifts).sum(axis=1)  # [Gc, N]
        table = table_s if piece == pieces - 1 else table_u
        for col in range(cols):
            kept = np.flatnonzero(nonzero[:, col])
            acc[:, col] += table[:, kept, index[kept, col]].sum(axis=1) << (piece * piece_bits)
    return acc.astype(np.int32)
