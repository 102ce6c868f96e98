"""NumPy integer reference of LUT-NA's exact mode (no TVM, no torch).

Quantization (post-training, symmetric, zero point 0):

* weights ``W [D, N]`` (the ``matmul(x, W)`` layout of ``lut_tvm.weights``) to ``b`` bits per
  output channel: ``scale[n] = max|W[:, n]| / (2^(b-1) - 1)``,
  ``Wq = clip(rint(W / scale), -(2^(b-1) - 1), 2^(b-1) - 1)`` (int8 storage, ``b`` in 2..8);
* activations to int8 per tensor with a calibrated scale: ``xq = clip(rint(x / sx), -127, 127)``
  computed in float32 (``rint`` is round-half-to-even, like ``torch.round``);
* integer GEMM: ``acc = xq @ Wq`` in int32; the bias is quantized to int32 at the accumulator's
  scale, ``bias_q = rint(bias / out_scale)``, and ``y = float32(acc + bias_q) * out_scale[n]``
  with ``out_scale = float32(sx) * scale`` (float32): one IEEE multiply, reproducible bit for bit.

Exact LUT decomposition (what the compiled kernel computes). A ``b``-bit two's-complement weight
is ``w = sum_{j < b-1} 2^j p_j - 2^(b-1) p_{b-1}`` with bit planes ``p_j`` in {0, 1}. Split the
reduction ``D`` into ``Gc = ceil(D / 4)`` groups of ``G = 4`` activations (the tail padded with
zeros). For each row ``m`` and group ``g`` the 16-entry **activation table**
``T[m, g, k] = sum_{i < 4} bit_i(k) * xq[m, 4g + i]`` (int16, ``|T| <= 508``) holds every
partial sum that 4 one-bit weights can select; the **pattern** of plane ``j``, group ``g``,
column ``n`` is ``pat[j, g, n] = sum_i p_j[4g + i, n] << i`` (4 bits). Then

    acc_j[m, n] = sum_g T[m, g, pat[j, g, n]]            (one look-up + one add per group)
    acc[m, n]   = sum_{j < b-1} acc_j << j  -  acc_{b-1} << (b-1)     (shift-and-add)

which equals ``xq @ Wq`` exactly. A zero weight has all planes zero; a group whose 4 weights
(of one column) are all zero has pattern 0 in every plane and ``T[., ., 0] = 0``, so it is
dropped from that column's list (``ExactPacked.group_index``) and costs nothing.

``pack_exact_blocks`` / ``block_lut_matmul`` are the byte-shuffle kernel's layout: one skip list
per block of 64 columns (a shuffle looks up one table for 16-64 columns at once), so a group is
dropped only where the whole block's weights are zero.

``piece_lut_matmul`` generalises the pieces to ``p``-bit digits (p = 1 bit planes, 2 crumbs,
4 nibbles) with ``G = 4 / p`` activations per 16-entry table and a signed top digit; it exists
to compare the decompositions (``lut_tvm.exact.cost``) and is exact for every ``p`` too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACT_QMAX = 127
GROUP = 4
TABLE_ENTRIES = 16
MIN_BITS, MAX_BITS = 2, 8
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def check_bits(bits: int) -> int:
    """``bits`` as an int in [2, 8]; ValueError otherwise."""
    if int(bits) != bits or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"weight bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return int(bits)


def weight_qmax(bits: int) -> int:
    """Largest quantized weight magnitude for symmetric ``bits``-bit weights (1 for ternary b=2)."""
    return 2 ** (check_bits(bits) - 1) - 1


# ----------------------------------------------------------------------------- quantization

def weight_scales(weight: np.ndarray, bits: int) -> np.ndarray:
    """Per-output-channel scales ``[N]`` (float32) of ``W [D, N]``; an all-zero column gets 1."""
    weight = np.asarray(weight, dtype=np.float32)
    if weight.ndim != 2:
        raise ValueError(f"weight must be [D, N], got shape {weight.shape}")
    peak = np.abs(weight).max(axis=0)
    scale = (peak / np.float32(weight_qmax(bits))).astype(np.float32)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def quantize_weight(weight: np.ndarray, bits: int, scale: np.ndarray | None = None):
    """``(Wq int8 [D, N], scale float32 [N])``; ``scale`` defaults to ``weight_scales``."""
    weight = np.asarray(weight, dtype=np.float32)
    scale = weight_scales(weight, bits) if scale is None else np.asarray(scale, dtype=np.float32)
    qmax = weight_qmax(bits)
    quant = np.clip(np.rint(weight / scale[None, :]), -qmax, qmax).astype(np.int8)
    return quant, scale


def calibrate_activation_scale(samples, method: str = "max", percentile: float = 99.99) -> np.float32:
    """Per-tensor int8 scale from calibration activations: ``max|x| / 127`` (or a percentile)."""
    values = np.abs(np.asarray(samples, dtype=np.float32)).ravel()
    if values.size == 0:
        raise ValueError("calibration needs at least one activation value")
    if method == "max":
        peak = values.max()
    elif method == "percentile":
        peak = np.percentile(values, percentile)
    else:
        raise ValueError(f"unknown calibration method {method!r} (max, percentile)")
    scale = np.float32(peak) / np.float32(ACT_QMAX)
    return np.float32(scale) if scale > 0 and np.isfinite(scale) else np.float32(1.0)


def quantize_activations(x: np.ndarray, scale) -> np.ndarray:
    """int8 ``clip(rint(x / scale), -127, 127)`` computed in float32 (half to even)."""
    ratio = np.asarray(x, dtype=np.float32) / np.float32(scale)
    return np.clip(np.rint(ratio), -ACT_QMAX, ACT_QMAX).astype(np.int8)


def output_scale(act_scale, w_scale: np.ndarray) -> np.ndarray:
    """``float32(sx) * scale[n]`` in float32: the dequantization factor of ``acc[:, n]``."""
    return (np.float32(act_scale) * np.asarray(w_scale, dtype=np.float32)).astype(np.float32)


def quantize_bias(bias, out_scale: np.ndarray) -> np.ndarray:
    """int32 ``rint(bias / out_scale)``: the bias in the accumulator's units (zeros if None)."""
    out_scale = np.asarray(out_scale, dtype=np.float32)
    if bias is None:
        return np.zeros(out_scale.shape, dtype=np.int32)
    ratio = np.asarray(bias, dtype=np.float64) / out_scale.astype(np.float64)
    return np.clip(np.rint(ratio), INT32_MIN, INT32_MAX).astype(np.int32)


def dequantize(acc: np.ndarray, out_scale: np.ndarray, bias_q: np.ndarray | None = None,
               relu: bool = False) -> np.ndarray:
    """``float32(acc + bias_q) * out_scale`` (float32), optional ReLU.

    The bias is added in the integer domain (int32, at scale ``sx * scale[n]``) so that the
    float part is a single IEEE multiply: a float ``acc * s + bias`` would be contracted into
    an FMA by LLVM (TVM allows FP-op fusion) and differ from NumPy/torch in the last bit.
    """
    acc = np.asarray(acc, dtype=np.int64)
    if bias_q is not None:
        acc = acc + np.asarray(bias_q, dtype=np.int64)
    y = acc.astype(np.int32).astype(np.float32) * np.asarray(out_scale, dtype=np.float32)
    return np.maximum(y, np.float32(0)) if relu else y


def int_gemm(xq: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """``xq [M, D] @ wq [D, N]`` exactly, as int32 (OverflowError if a sum leaves int32)."""
    acc = np.asarray(xq, dtype=np.int64) @ np.asarray(wq, dtype=np.int64)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError("integer GEMM result does not fit int32")
    return acc.astype(np.int32)


# ------------------------------------------------------------------ exact LUT decomposition

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


# ------------------------------------------------------------------------- quantized layers

@dataclass
class QuantizedDense:
    """One quantized dense layer: ``y = dequantize(int_gemm(quantize(x), Wq) + bias_q)``."""

    wq: np.ndarray  # int8 [D, N]
    bits: int
    w_scale: np.ndarray  # float32 [N]
    act_scale: np.float32
    bias_q: np.ndarray  # int32 [N]

    @classmethod
    def from_float(cls, weight, bits, calibration, bias=None, method: str = "max",
                   act_scale=None):
        """Quantize ``W [D, N]`` to ``bits`` and calibrate the input scale on ``calibration``."""
        wq, scale = quantize_weight(weight, bits)
        act = (calibrate_activation_scale(calibration, method) if act_scale is None
               else np.float32(act_scale))
        return cls(wq, check_bits(bits), scale, act, quantize_bias(bias, output_scale(act, scale)))

    @property
    def out_scale(self) -> np.ndarray:
        return output_scale(self.act_scale, self.w_scale)

    def __call__(self, x: np.ndarray, relu: bool = False, use_lut: bool = False) -> np.ndarray:
        xq = quantize_activations(x, self.act_scale)
        acc = (exact_lut_matmul(xq, pack_exact(self.wq, self.bits)) if use_lut
               else int_gemm(xq, self.wq))
        return dequantize(acc, self.out_scale, self.bias_q, relu)


# ------------------------------------------------------------- shuffle layout (column blocks)

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

