"""NumPy integer reference of a quantized conv2d: im2col rows times the b-bit weight, exactly."""

from __future__ import annotations

import numpy as np

from ..reference import im2col_nchw
from ..weights import LayerKind, as_dense_matrix
from .reference import dequantize, exact_lut_matmul, int_gemm, pack_exact


def rows_to_nchw(acc: np.ndarray, geometry) -> np.ndarray:
    """``[B*OH*OW, N]`` (im2col row order) back to ``[B, N, OH, OW]``."""
    batch, out_h, out_w = geometry
    return np.asarray(acc).reshape(batch, out_h, out_w, -1).transpose(0, 3, 1, 2)


def int_conv2d(xq: np.ndarray, wq: np.ndarray, stride=1, padding=0, dilation=1,
               bits: int | None = None) -> np.ndarray:
    """int32 NCHW ``conv2d(xq, wq)`` of int8 ``xq`` and ``wq [O, I, kh, kw]``, exactly.

    The weight is used as the ``[D, N]`` matrix of ``lut_tvm.weights.as_dense_matrix`` times the
    rows of ``reference.im2col_nchw`` (``padding``: an int, a ``(ph, pw)`` pair, a 4-tuple or
    ``"same"``/``"valid"``). With
    ``bits`` the product is LUT-NA's exact LUT decomposition of ``bits``-bit weights
    (``reference.exact_lut_matmul``); without, the int32 GEMM. The two are equal.
    """
    wq = np.asarray(wq)
    if wq.ndim != 4 or np.ndim(xq) != 4 or wq.shape[1] != np.shape(xq)[1]:
        raise ValueError(f"conv weight {wq.shape} does not fit an NCHW input of shape {np.shape(xq)}")
    rows, geometry = im2col_nchw(xq, wq.shape[2:], stride, padding, dilation)
    matrix = as_dense_matrix(LayerKind.CONV2D, wq)
    acc = exact_lut_matmul(rows, pack_exact(matrix, bits)) if bits else int_gemm(rows, matrix)
    return rows_to_nchw(acc, geometry)


def dequantize_nchw(acc: np.ndarray, out_scale: np.ndarray, bias_q: np.ndarray | None = None,
                    relu: bool = False) -> np.ndarray:
    """``reference.dequantize`` of an NCHW accumulator (per-channel scale on axis 1)."""
    nhwc = np.moveaxis(np.asarray(acc), 1, -1)
    return np.ascontiguousarray(np.moveaxis(dequantize(nhwc, out_scale, bias_q, relu), -1, 1))
