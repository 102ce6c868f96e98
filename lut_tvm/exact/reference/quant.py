"""LUT-NA's symmetric post-training quantization and integer GEMM in NumPy (the ``lut_tvm.exact.reference``
docstring has the formulas)."""

from __future__ import annotations

import numpy as np

ACT_QMAX = 127
GROUP = 4
TABLE_ENTRIES = 16
MIN_BITS, MAX_BITS = 1, 8  # 1: binary {-1, +1} weights (T-MAC kernel only); 2: ternary {-1, 0, +1}
SEARCH_MIN_BITS = 2  # the mixed-precision search's default floor
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def check_bits(bits: int) -> int:
    """``bits`` as an int in [1, 8]; ValueError otherwise."""
    if int(bits) != bits or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"weight bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return int(bits)


def weight_qmax(bits: int) -> int:
    """Largest quantized weight magnitude for symmetric ``bits``-bit weights (1 for ternary b=2
    and for binary b=1)."""
    return 1 if check_bits(bits) == 1 else 2 ** (bits - 1) - 1


# ----------------------------------------------------------------------------- quantization

def weight_scales(weight: np.ndarray, bits: int) -> np.ndarray:
    """Per-output-channel scales ``[N]`` (float32) of ``W [D, N]``; an all-zero column gets 1."""
    weight = np.asarray(weight, dtype=np.float32)
    if weight.ndim != 2:
        raise ValueError(f"weight must be [D, N], got shape {weight.shape}")
    if check_bits(bits) == 1:  # binary: the mean magnitude minimizes |W - scale * sign(W)|^2
        scale = np.abs(weight).mean(axis=0, dtype=np.float32).astype(np.float32)
        return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    peak = np.abs(weight).max(axis=0)
    scale = (peak / np.float32(weight_qmax(bits))).astype(np.float32)
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def quantize_weight(weight: np.ndarray, bits: int, scale: np.ndarray | None = None):
    """``(Wq int8 [D, N], scale float32 [N])``; ``scale`` defaults to ``weight_scales``; 1-bit
    weights are the signs {-1, +1} (zero counts as +1)."""
    weight = np.asarray(weight, dtype=np.float32)
    scale = weight_scales(weight, bits) if scale is None else np.asarray(scale, dtype=np.float32)
    if bits == 1:
        return np.where(weight >= 0, 1, -1).astype(np.int8), scale
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
