"""NumPy reference of the int8 dense layer (dynamic activation quantization, int8 weights), independent of TVM.

The math the int8 kernels (``schedules.int8_dense_compute``) compute, bit for bit:

* weights ``W [D, N]``: symmetric int8 per output column, ``ws[n] = max|W[:, n]| / 127`` (1 for a
  zero column), ``wq = clip(rint(W / ws), -127, 127)``;
* activations ``x [M, D]``: asymmetric uint8 per row, quantized at run time (dynamic):
  ``lo = min(min_d x, 0)``, ``hi = max(max_d x, 0)``, ``xs = (hi - lo) / 255`` (1 for a zero row),
  ``zp = clip(rint(-lo / xs), 0, 255)``, ``xq = clip(rint(x / xs) + zp, 0, 255)``
  (float32, rint half to even; 0 is represented exactly);
* ``acc = xq @ wq`` accumulated in int32 (uint8 x int8, exact for ``D < 66,000``);
* ``y = float32(acc - zp[m] * colsum[n]) * xs[m] * ws[n]`` with ``colsum[n] = sum_d wq[d, n]``:
  two multiplies and no float add, so no FMA contraction can change the result. A bias is added
  after, as the model's own add.

This is ONNX Runtime's dynamic quantization (``DynamicQuantizeLinear``: uint8 activations with
a zero point, int8 weights, int32 accumulation) with one activation scale per row instead of
one per tensor (no slower, and an outlier row no longer coarsens every other row) and one
weight scale per output column. uint8 x int8 is what x86's ``vpdpbusd`` (VNNI) multiplies; the
kernels without VNNI widen both to int16 and use ``vpmaddwd``, which is exact where
``vpmaddubsw`` could saturate its int16 pair sums (2 * 255 * 127 > 32767).

``act_bits`` 7 (plan field ``act_bits``) quantizes the activations to 0..127 instead (``ACT_QMAX``
becomes ``2 ** act_bits - 1`` in every formula above): half the resolution, but every
``vpmaddubsw`` pair sum fits int16 (2 * 127 * 127 = 32258), so CPUs without VNNI run the exact
``vpmaddubsw`` kernel (oneDNN's choice on such CPUs). 8 is the default and what older plans mean.
"""

from __future__ import annotations

import numpy as np

WEIGHT_QMAX = 127
ACT_QMAX = 255
ACT_BITS = (7, 8)  # the activation widths a plan may ask for; 8 by default


def act_qmax(act_bits: int = 8) -> int:
    """The largest quantized activation, ``2 ** act_bits - 1`` (255 or 127)."""
    if isinstance(act_bits, bool) or act_bits not in ACT_BITS:
        raise ValueError(f"int8 dense: act_bits is {act_bits!r}, not one of {list(ACT_BITS)}")
    return (1 << int(act_bits)) - 1


def quantize_weight(weight_dn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(wq [D, N] int8, ws [N] float32)``: symmetric int8 per output column of ``W [D, N]``."""
    weight = np.asarray(weight_dn, dtype=np.float32)
    peak = np.abs(weight).max(axis=0)
    scale = np.where(peak > 0, peak / np.float32(WEIGHT_QMAX), np.float32(1.0)).astype(np.float32)
    wq = np.clip(np.rint(weight / scale), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)
    return wq, scale


def row_scales(x: np.ndarray, act_bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``(xs [M] float32, zp [M] float32)``: each row's scale and zero point (``act_bits`` wide)."""
    qmax = act_qmax(act_bits)
    x = np.asarray(x, dtype=np.float32)
    low = np.minimum(x.min(axis=1), np.float32(0.0))
    high = np.maximum(x.max(axis=1), np.float32(0.0))
    span = (high - low) / np.float32(qmax)
    scale = np.where(span > 0, span, np.float32(1.0)).astype(np.float32)
    zero_point = np.clip(np.rint(-low / scale), 0, qmax).astype(np.float32)
    return scale, zero_point


def quantize_rows(x: np.ndarray, act_bits: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xq [M, D] uint8, xs [M] float32, zp [M] int32)``: ``x [M, D]`` quantized per row to
    ``0 .. 2 ** act_bits - 1``."""
    x = np.asarray(x, dtype=np.float32)
    scale, zero_point = row_scales(x, act_bits)
    xq = np.clip(np.rint(x / scale[:, None]) + zero_point[:, None], 0, act_qmax(act_bits)).astype(np.uint8)
    return xq, scale, zero_point.astype(np.int32)


def accumulate(xq: np.ndarray, wq: np.ndarray) -> np.ndarray:
    """``xq [M, D] uint8 @ wq [D, N] int8`` in int32 (exact)."""
    return (xq.astype(np.int64) @ wq.astype(np.int64)).astype(np.int32)


def column_sums(wq: np.ndarray) -> np.ndarray:
    """``colsum [N] int32``: the zero point's correction ``sum_d wq[d, n]``."""
    return wq.astype(np.int32).sum(axis=0, dtype=np.int32)


def dequantize(acc: np.ndarray, xs: np.ndarray, zp: np.ndarray, colsum: np.ndarray,
               ws: np.ndarray) -> np.ndarray:
    """``float32(acc - zp[m] * colsum[n]) * xs[m] * ws[n]`` in float32, in that order."""
    centered = (acc - zp[:, None].astype(np.int32) * colsum[None, :]).astype(np.float32)
    return (centered * xs[:, None].astype(np.float32)) * ws[None, :].astype(np.float32)


def int8_dense(x: np.ndarray, weight_dn: np.ndarray, bias: np.ndarray | None = None,
               act_bits: int = 8) -> np.ndarray:
    """The int8 dense layer ``x [..., D] @ W [D, N] (+ bias)`` as the compiled kernel computes it,
    activations quantized to ``act_bits`` (8: 0..255, 7: 0..127)."""
    x = np.asarray(x, dtype=np.float32)
    rows = x.reshape(-1, x.shape[-1])
    wq, ws = quantize_weight(weight_dn)
    xq, xs, zp = quantize_rows(rows, act_bits)
    out = dequantize(accumulate(xq, wq), xs, zp, column_sums(wq), ws)
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float32)
    return out.reshape(*x.shape[:-1], wq.shape[1])


def pack_weight(wq: np.ndarray, lanes: int, group: int) -> np.ndarray:
    """``wq [D, N]`` int8 in the layout the dot-product intrinsics read, ``[Np/L, Dp/R, L, R]``
    (``L = lanes`` output columns of ``R = group`` consecutive depths each), zero padded to
    ``Dp`` (a multiple of R) and ``Np`` (a multiple of L):
    ``packed[no, ko, ni, ki] = wq[ko * R + ki, no * L + ni]``."""
    depth, cols = wq.shape
    padded_d, padded_n = -(-depth // group) * group, -(-cols // lanes) * lanes
    full = np.zeros((padded_d, padded_n), np.int8)
    full[:depth, :cols] = wq
    blocks = full.reshape(padded_d // group, group, padded_n // lanes, lanes)
    return np.ascontiguousarray(blocks.transpose(2, 0, 3, 1))
