"""RewriteDenseToInt8: replace planned ``matmul(x, const W)`` by the int8 dense kernels.

Before: ``FoldConstant`` has run, so dense layers read ``matmul(x, const W[D, N])`` (x of rank
>= 2, float32). After: for each matmul whose weight fingerprint the plan names in mode
``int8_dense`` (``plan.LayerMode``), ``x`` is reshaped to ``[M, D]`` rows; one ``call_tir``
quantizes them per row (``int8_quantize_rows``: uint8 rows, scales, zero points) and a second
multiplies them with the weight, quantized per output column and packed offline for the
current target's dot-product instruction for the layer's activation width (``act_bits``,
``schedules.intrin.int8_dot``), and dequantizes (``int8_dense``); the result is reshaped back to ``[..., N]``. The graph's following bias add
and activation stay as they are. The math is ``lut_tvm.int8_reference``. Other matmuls, and
the plan's LUT layers, are left alone.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.transform import module_pass

from lut_tvm import int8_reference as ref
from lut_tvm.plan import LayerMode, LayerPlan
from lut_tvm.weights import as_dense_matrix
from schedules.int8_dense_compute import int8_dense_func, int8_quantize_rows_func, padded_rows
from schedules.intrin.int8_dot import FALLBACK, Int8Layout, int8_layout_for_target

from .layer_sites import LayerSite, match_dense
from .planned_rewriter import PlannedRewritePass, const, emit_on_rows, kernel_call


def current_layout(act_bits: int = 8) -> Int8Layout:
    """The packed weight layout of the target being compiled for (``FALLBACK`` without one)."""
    target = tvm.target.Target.current(allow_none=True)
    return int8_layout_for_target(target, act_bits) if target is not None else FALLBACK


def emit_int8_dense(builder: relax.BlockBuilder, data: relax.Expr, weight_dn: np.ndarray,
                    shape: tuple[int, int], act_bits: int = 8) -> relax.Expr:
    """The two kernels of ``data [M, D] @ weight_dn [D, N]`` in int8, activations of ``act_bits``;
    returns ``y [M, N]``."""
    rows, depth = shape
    layout = current_layout(act_bits)
    wq, ws = ref.quantize_weight(weight_dn)
    packed = ref.pack_weight(wq, layout.lanes, layout.group)
    padded_depth = packed.shape[1] * packed.shape[3]
    mp = padded_rows(rows)
    quantize = builder.add_func(int8_quantize_rows_func(rows, depth, padded_depth, act_bits), "int8_quantize_rows")
    quantized = builder.emit(relax.call_tir(quantize, [data], [
        relax.TensorType((mp, padded_depth), "uint8"), relax.TensorType((mp,), "float32"),
        relax.TensorType((mp,), "float32")]))
    xq, xs, zp = (builder.emit(relax.TupleGetItem(quantized, i)) for i in range(3))
    cols = wq.shape[1]
    args = [xq, const(packed), const(ref.column_sums(wq)), xs, zp, const(ws)]
    return kernel_call(builder, int8_dense_func(rows, packed.shape, cols, act_bits), "int8_dense", args, (rows, cols))


@module_pass(opt_level=0, name="RewriteDenseToInt8")
class RewriteDenseToInt8(PlannedRewritePass):
    """Rewrite the plan's int8 dense layers into the int8 kernels."""

    match = staticmethod(match_dense)
    modes = (LayerMode.INT8_DENSE,)

    def emit(self, builder: relax.BlockBuilder, call: relax.Call, site: LayerSite,
             layer: LayerPlan) -> relax.Expr:
        weight_dn = as_dense_matrix(site.kind, site.weight)
        return emit_on_rows(builder, call, site, weight_dn.shape[1],
                            lambda data, shape: emit_int8_dense(builder, data, weight_dn, shape, layer.act_bits))
