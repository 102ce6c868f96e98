"""NumPy reference of the int8 LUT encode (integer nearest-centroid distances), independent of TVM.

The math the int8 row encode (``schedules.lut_encode_rows_int8_compute``) computes, bit for bit:

* one scale per codebook from its centroids, ``s[c] = max|P[c]| / CENTROID_QMAX`` (1 for an
  all-zero codebook), used for the centroids *and* the input of that codebook; the kernels read
  its float32 reciprocal ``inv[c] = float32(CENTROID_QMAX / max|P[c]|)`` (1 for a zero codebook);
* centroids (offline): ``Pq = clip(rint(P * inv[c]), -64, 64)``, stored unsigned
  ``Pu = Pq + 64`` in ``[0, 128]``, each sub-vector zero-padded (``Pq = 0``) to ``Vp``, a
  multiple of ``GROUP = 4``; ``NQ[c, k] = ||Pq[c, k]||^2`` (int32);
* input (run time): ``xq = clip(rint(x * inv[c]), -128, 127)`` (float32 multiply, rint half to
  even, then int8), padded with 0 to ``Vp``;
* ``dot[m, c, k] = sum_v int32(xq) * int32(Pu)`` (exact), ``dist = NQ[c, k] - 2 dot`` (int32),
  ``code = argmin_k dist`` (first index wins a tie).

``dist`` is ``||xq - Pq||^2`` minus ``||xq||^2`` and ``128 sum_v xq`` (the unsigned offset),
both the same for every centroid of a codebook: the code is the exact nearest centroid of the
quantized input on the codebook's integer grid (input clipped at twice the centroids' extent).
A shared scale per codebook keeps the whole distance in integers; the int8 dense layer's
per-row input scale (``lut_tvm.int8_reference.row_scales``) would leave the row-dependent ratio
``s[c] / xs[m]`` between ``NQ`` and ``dot``, i.e. a float distance per (row, centroid).

Why these ranges: ``Pu <= 128`` and ``-128 <= xq <= 127`` bound a pair of products by
``2 * 128 * 128 = 32768`` in magnitude (``-32768`` only for ``xq = -128``, ``+32512`` at most),
so AVX2 / AVX-512BW ``vpmaddubsw`` (unsigned x signed byte pairs summed to saturating int16)
never saturates; VNNI ``vpdpbusd`` and widened ``vpmaddwd`` are exact anyway. ``dot`` fits
int32 for any ``V < 2**31 / 16384``.
"""

from __future__ import annotations

import numpy as np

CENTROID_QMAX = 64
CENTROID_OFFSET = 64  # Pu = Pq + 64: the unsigned operand of vpmaddubsw / vpdpbusd
INPUT_QMIN, INPUT_QMAX = -128, 127
GROUP = 4  # depths per dot-product step (bytes per 32-bit lane); Vp is a multiple of it


def padded_sub_len(sub_len: int) -> int:
    """``Vp``: ``V`` rounded up to a multiple of ``GROUP``."""
    return -(-int(sub_len) // GROUP) * GROUP


def inverse_scales(centroids: np.ndarray) -> np.ndarray:
    """``inv [C]`` float32: ``CENTROID_QMAX / max|P[c]|`` per codebook (1 for a zero codebook)."""
    cents = np.asarray(centroids, dtype=np.float32)
    peak = np.abs(cents).reshape(cents.shape[0], -1).max(axis=1)
    safe = np.where(peak > 0, peak, np.float32(1.0)).astype(np.float32)
    return np.where(peak > 0, np.float32(CENTROID_QMAX) / safe, np.float32(1.0)).astype(np.float32)


def quantize_centroids(centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pu [C, K, Vp] uint8, nq [C, K] int32, inv [C] float32)`` of centroids ``[C, K, V]``."""
    cents = np.asarray(centroids, dtype=np.float32)
    if cents.ndim != 3:
        raise ValueError(f"centroids must be [C, K, V], got shape {cents.shape}")
    num_codebooks, num_centroids, sub_len = cents.shape
    inv = inverse_scales(cents)
    levels = np.clip(np.rint(cents * inv[:, None, None]), -CENTROID_QMAX, CENTROID_QMAX).astype(np.int32)
    padded = np.zeros((num_codebooks, num_centroids, padded_sub_len(sub_len)), np.int32)
    padded[..., :sub_len] = levels
    norms = (levels.astype(np.int64) ** 2).sum(-1).astype(np.int32)
    return (padded + CENTROID_OFFSET).astype(np.uint8), norms, inv


def quantize_input(rows: np.ndarray, inv: np.ndarray, sub_len: int) -> np.ndarray:
    """``xq [M, C, Vp]`` int8 of ``rows [M, C*V]`` float32 with the codebooks' ``inv [C]``."""
    rows = np.asarray(rows, dtype=np.float32)
    num_codebooks = int(inv.shape[0])
    if rows.ndim != 2 or rows.shape[1] != num_codebooks * sub_len:
        raise ValueError(f"rows {rows.shape} are not [M, {num_codebooks} codebooks x {sub_len}]")
    subs = rows.reshape(rows.shape[0], num_codebooks, sub_len) * inv.astype(np.float32)[None, :, None]
    levels = np.clip(np.rint(subs), INPUT_QMIN, INPUT_QMAX).astype(np.int8)
    out = np.zeros((rows.shape[0], num_codebooks, padded_sub_len(sub_len)), np.int8)
    out[..., :sub_len] = levels
    return out


def int8_distances(rows: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``dist [M, C, K]`` int32: ``NQ[c, k] - 2 sum_v xq * Pu`` (the kernel's argmin operand)."""
    pu, norms, inv = quantize_centroids(centroids)
    xq = quantize_input(rows, inv, np.asarray(centroids).shape[2])
    dot = np.einsum("mcv,ckv->mck", xq.astype(np.int64), pu.astype(np.int64))
    return (norms[None].astype(np.int64) - 2 * dot).astype(np.int32)


def encode_int8(rows: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Codes ``[M, C]`` (uint8) of ``rows [M, C*V]`` by the int8 distances, first index on a tie."""
    return int8_distances(rows, centroids).argmin(-1).astype(np.uint8)
