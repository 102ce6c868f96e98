"""What the two LUT-NN rewrite passes share: a layer's constant operands and its encode + lookup calls.

Both turn ``(site, plan layer)`` into the constants (centroids, norms, INT8 tables, scale, zero
bias) and two kernel calls. The real tables are the plan layer's free ``tables`` when it has them,
else ``P.W`` of the model's weight; either way they are quantized by ``reference.quantize_tables``
at the layer's ``table_quant`` granularity. The kernels always read a scale vector ``[N]``: the
layer's one scale repeated, or its per-column scales. ``use_shuffle_lookup`` says whether the
byte-shuffle lookup (tables ``[N, C, 16]``) serves a layer on the current target. A layer whose
plan asks for the int8 encode (``plan.EncodeMode.INT8``) gets its centroids quantized here
(``int8_encode_reference.quantize_centroids``: unsigned levels, their norms, the codebooks'
input scales) and encodes with ``encode_dense_rows_int8_func``.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from lut_tvm.errors import PlanError
from lut_tvm.int8_encode_reference import quantize_centroids
from lut_tvm.plan import EncodeMode, LayerPlan, TableQuant
from lut_tvm.reference import build_tables, column_scale, quantize_tables
from lut_tvm.weights import as_dense_matrix, output_length
from schedules.intrin.lut_vbmi import lookup_intrin_for_target
from schedules.lut_compute import CODE_DTYPE

from .layer_sites import LayerSite
from .planned_rewriter import const, kernel_call


# Fewest rows that take the shuffle path, though a shuffle register holds 16-64 rows. Measured
# (whole layer, AVX-512, one thread, load ~7; us, gather / shuffle): Linear 384->100 at V = 4,
# 1 row 12.7 / 17.9, 4 rows 29.6 / 18.8, 8 rows 126 / 19, 32 rows 369 / 20; 100->10 at V = 2,
# 1 row 1.8 / 13.1, 8 rows 14.0 / 13.0, 32 rows 18.8 / 13.7.
MIN_SHUFFLE_ROWS = 4


class LutLayerConstants:
    """The constant operands of one LUT layer, computed from its plan entry and weight."""

    @staticmethod
    def real_tables(site: LayerSite, layer: LayerPlan) -> np.ndarray:
        """``[C, K, N]`` float64: the plan's free tables if it has them, else ``P.W``."""
        if layer.tables is not None:
            return np.asarray(layer.tables, dtype=np.float64)
        return build_tables(layer.centroids.astype(np.float32), as_dense_matrix(site.kind, site.weight))

    def __init__(self, site: LayerSite, layer: LayerPlan):
        centroids = layer.centroids.astype(np.float32)
        self.out_features = output_length(site.kind, site.weight.shape)
        if layer.tables is not None and tuple(layer.tables.shape) != (*centroids.shape[:2], self.out_features):
            raise PlanError(f"plan layer {layer.name!r}: field 'tables' {list(layer.tables.shape)} is not "
                            f"[C, K, N] = {[*centroids.shape[:2], self.out_features]}")
        tables_q, scale = quantize_tables(self.real_tables(site, layer),
                                          TableQuant(layer.table_quant).granularity)
        self.num_codebooks, self.num_centroids, self.sub_len = centroids.shape
        self.int8_encode = EncodeMode(layer.encode) is EncodeMode.INT8
        if self.int8_encode:  # the encode's operands: (pu, nq, inv) in place of (P, ||P||^2)
            self.encode_operands = [const(a) for a in quantize_centroids(centroids)]
        else:
            self.encode_operands = [const(centroids),
                                    const((centroids.astype(np.float64) ** 2).sum(-1).astype(np.float32))]
        self.tables_q = tables_q
        self.table = const(tables_q)
        self.scale = const(column_scale(scale, self.out_features))
        self.bias = const(np.zeros(self.out_features, dtype=np.float32))

    @property
    def shuffle_table(self) -> relax.Constant:
        """The tables as the byte-shuffle lookup reads them: ``[N, C, K]``."""
        return const(self.tables_q.transpose(2, 0, 1))


def use_shuffle_lookup(rows: int, num_centroids: int) -> bool:
    """Whether the byte-shuffle lookup (and the row encode before it) serves a layer of ``rows`` rows
    and ``num_centroids`` centroids on the current target.

    It needs a target with a lookup intrinsic for the layer's K (a 16-byte shuffle for K = 16,
    AVX-512 VBMI ``vpermb`` for K = 32 / 64) and at least ``MIN_SHUFFLE_ROWS`` rows (the kernel
    pads rows to 64); any N (the kernel's channel tile is a divisor of N,
    ``schedules.rules.lut_lookup_shuffle``). With N not a multiple of 16 the gather kernels took
    200-300 ms on a 24-channel 3x3 conv at batch 32, 20x20 (V = 2 / 4 / 8), the shuffle path
    1.1-1.7 ms (dense TVM 10 ms).
    """
    target = tvm.target.Target.current(allow_none=True)
    intrin = lookup_intrin_for_target(target, num_centroids) if target is not None else None
    return intrin is not None and rows >= MIN_SHUFFLE_ROWS


def emit_encode(builder: relax.BlockBuilder, func, name: str, data, consts: LutLayerConstants, codes_shape):
    """Emit ``codes = encode(data, *encode operands)`` (``(centroids, norms)``, or the int8 encode's
    ``(pu, nq, inv)``); returns the codes var."""
    return builder.emit(kernel_call(builder, func, name, [data, *consts.encode_operands],
                                    codes_shape, CODE_DTYPE))


def lookup_call(builder: relax.BlockBuilder, func, name: str, codes, consts: LutLayerConstants,
                out_shape, shuffle: bool = False) -> relax.Call:
    """The ``lookup(codes, table, scale, bias)`` call producing float32 ``out_shape`` (with the
    shuffle lookup's table layout if ``shuffle``)."""
    table = consts.shuffle_table if shuffle else consts.table
    return kernel_call(builder, func, name, [codes, table, consts.scale, consts.bias], out_shape)
