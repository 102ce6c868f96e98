"""The byte-shuffle kernel's weight layout in NumPy: skip lists per block of 64 columns
(``ExactBlockPacked``) and the look-up matmul from it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tables import activation_tables, bit_planes, group_patterns, num_groups, plane_coefficients

COLUMN_BLOCK = 64  # columns sharing one skip list in the shuffle layout (the widest shuffle)


@dataclass
class ExactBlockPacked:
    """A quantized weight in the shuffle kernel's layout: skip lists per block of 64 columns.

    A byte shuffle looks up one activation table (row ``m``, group ``g``) for 16-64 columns at
    once, so those columns must read the same group: a group is dropped only where the whole
    block's weights are zero. ``group_index [Kmax, NB]`` int32 lists each block's kept groups
    (then group 0); ``patterns [b, Kmax, NB * 64]`` uint8 hold every column's patterns (0 for
    padding entries and the padding columns past ``N``, which select ``T[m, g, 0] = 0``).
    """

    bits: int
    depth: int
    out_features: int
    group_index: np.ndarray
    patterns: np.ndarray

    @property
    def max_groups(self) -> int:
        return int(self.group_index.shape[0])

    @property
    def padded_features(self) -> int:
        return int(self.patterns.shape[2])

    def with_entries(self, count: int) -> "ExactBlockPacked":
        """The same weight with every list padded to ``count`` entries (group 0, pattern 0)."""
        if count < self.max_groups:
            raise ValueError(f"cannot shorten {self.max_groups} list entries to {count}")
        extra = count - self.max_groups
        return ExactBlockPacked(
            self.bits, self.depth, self.out_features,
            np.pad(self.group_index, ((0, extra), (0, 0))),
            np.pad(self.patterns, ((0, 0), (0, extra), (0, 0))))


def pack_exact_blocks(wq: np.ndarray, bits: int, block: int = COLUMN_BLOCK) -> ExactBlockPacked:
    """Bit planes -> group patterns -> per-block skip lists of the nonzero groups."""
    wq = np.asarray(wq)
    if wq.ndim != 2:
        raise ValueError(f"quantized weight must be [D, N], got shape {wq.shape}")
    depth, cols = wq.shape
    blocks = -(-cols // block)
    dense = np.zeros((bits, num_groups(depth), blocks * block), dtype=np.uint8)
    dense[:, :, :cols] = group_patterns(bit_planes(wq, bits))
    kept = [np.flatnonzero(dense[:, :, b * block:(b + 1) * block].any(axis=(0, 2)))
            for b in range(blocks)]
    kmax = max(1, max(k.size for k in kept))
    group_index = np.zeros((kmax, blocks), dtype=np.int32)
    patterns = np.zeros((bits, kmax, blocks * block), dtype=np.uint8)
    for b, groups in enumerate(kept):
        columns = slice(b * block, (b + 1) * block)
        group_index[: groups.size, b] = groups
        patterns[:, : groups.size, columns] = dense[:, groups, columns]
    return ExactBlockPacked(int(bits), int(depth), int(cols), group_index, patterns)


def block_lut_matmul(xq: np.ndarray, packed: ExactBlockPacked) -> np.ndarray:
    """``xq @ Wq`` int32 from the shuffle layout (look-ups per column block, shift-and-add)."""
    tables = activation_tables(np.asarray(xq)).astype(np.int64)  # [M, Gc, 16]
    block = packed.padded_features // packed.group_index.shape[1]
    groups = np.repeat(packed.group_index, block, axis=1)  # [Kmax, Npad]
    coef = plane_coefficients(packed.bits)
    acc = np.zeros((tables.shape[0], packed.padded_features), dtype=np.int64)
    for plane in range(packed.bits):
        acc += coef[plane] * tables[:, groups, packed.patterns[plane]].sum(axis=1)
    return acc[:, : packed.out_features].astype(np.int32)
