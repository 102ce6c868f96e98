"""NumPy integer reference of LUT-NA's exact mode (no TVM, no torch).

Quantization (post-training, symmetric, zero point 0):

* weights ``W [D, N]`` (the ``matmul(x, W)`` layout of ``lut_tvm.weights``) to ``b`` bits per
  output channel: ``scale[n] = max|W[:, n]| / (2^(b-1) - 1)``,
  ``Wq = clip(rint(W / scale), -(2^(b-1) - 1), 2^(b-1) - 1)`` (int8 storage, ``b`` in 2..8;
  ``b = 2`` is ternary {-1, 0, +1}); ``b = 1`` is binary: ``Wq = sign(W)`` in {-1, +1} (0 -> +1),
  ``scale[n] = mean|W[:, n]|`` (computed only by the T-MAC kernel, ``reference.tmac``);
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

from .blocks import COLUMN_BLOCK, ExactBlockPacked, block_lut_matmul, pack_exact_blocks
from .quant import (ACT_QMAX, GROUP, INT32_MAX, INT32_MIN, MAX_BITS, MIN_BITS, TABLE_ENTRIES,
                    calibrate_activation_scale, check_bits, dequantize, int_gemm, output_scale,
                    quantize_activations, quantize_bias, quantize_weight, weight_qmax, weight_scales)
from .tmac import pack_tmac, tmac_matmul
from .tables import (ExactPacked, activation_tables, bit_planes, exact_lut_matmul, group_patterns,
                     num_groups, pack_exact, piece_lut_matmul, plane_accumulators, plane_coefficients)

__all__ = [
    "ACT_QMAX", "COLUMN_BLOCK", "GROUP", "INT32_MAX", "INT32_MIN", "MAX_BITS", "MIN_BITS", "TABLE_ENTRIES",
    "ExactBlockPacked", "ExactPacked", "QuantizedDense", "activation_tables", "bit_planes", "lut_matmul",
    "block_lut_matmul", "calibrate_activation_scale", "check_bits", "dequantize", "exact_lut_matmul",
    "group_patterns", "int_gemm", "num_groups", "output_scale", "pack_exact", "pack_exact_blocks",
    "piece_lut_matmul", "plane_accumulators", "plane_coefficients", "quantize_activations",
    "quantize_bias", "quantize_weight", "weight_qmax", "weight_scales",
]


def lut_matmul(xq: np.ndarray, wq: np.ndarray, bits: int) -> np.ndarray:
    """``xq @ Wq`` by table look-ups: bit-plane skip lists (``exact_lut_matmul``), or the T-MAC
    layout for 1-bit {-1, +1} weights (``tmac.tmac_matmul``: a signed table, no 0 to skip)."""
    if bits == 1:
        return tmac_matmul(xq, pack_tmac(wq, 1))
    return exact_lut_matmul(xq, pack_exact(wq, bits))


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
        acc = (lut_matmul(xq, self.wq, self.bits) if use_lut else int_gemm(xq, self.wq))
        return dequantize(acc, self.out_scale, self.bias_q, relu)
