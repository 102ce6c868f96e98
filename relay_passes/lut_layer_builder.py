"""Emit one planned layer as encode + lookup/accumulate call_tirs, with its tables built here.

Shared by the dense and conv2d rewrite passes: both turn ``(site, plan layer)`` into the
constants (centroids, norms, INT8 tables, scale, zero bias) and the two kernel calls. The real
tables are the plan layer's free ``tables`` when it has them, else ``P.W`` of the model's weight;
either way they are quantized by ``reference.quantize_tables`` at the layer's ``table_quant``
granularity. The kernels always read a scale vector ``[N]``: the layer's one scale repeated, or its
per-column scales.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from lut_tvm.errors import PlanError
from lut_tvm.plan import LayerPlan, Plan, TableQuant
from lut_tvm.reference import build_tables, column_scale, quantize_tables
from lut_tvm.weights import as_dense_matrix, output_length
from schedules.lut_compute import CODE_DTYPE

from .layer_sites import LayerSite


def _const(array: np.ndarray) -> relax.Constant:
    return relax.const(np.ascontiguousarray(array))


class LutLayerConstants:
    """The constant operands of one LUT layer, computed from its plan entry and weight."""

    @staticmethod
    def real_tables(site: LayerSite, layer: LayerPlan) -> np.ndarray:
        """``[C, K, N]`` float64: the plan's free tables if it has them, else ``P.W``."""
        if layer.tables is not None:
            return np.asarray(layer.tables, dtype=np.float64)
        return build_tables(layer.centroids.astype(np.float32), as_dense_matrix(site.kind, site.weight))

    def __init__(self, site: LayerSite, layer: LayerPlan):
        if tuple(site.weight.shape) != tuple(layer.weight_shape):
            raise PlanError(f"plan layer {layer.name!r}: field 'weight_shape' "
                            f"{list(layer.weight_shape)} does not match the model's weight "
                            f"{list(site.weight.shape)}")
        centroids = layer.centroids.astype(np.float32)
        self.out_features = output_length(site.kind, site.weight.shape)
        if layer.tables is not None and tuple(layer.tables.shape) != (*centroids.shape[:2], self.out_features):
            raise PlanError(f"plan layer {layer.name!r}: field 'tables' {list(layer.tables.shape)} is not "
                            f"[C, K, N] = {[*centroids.shape[:2], self.out_features]}")
        tables_q, scale = quantize_tables(self.real_tables(site, layer),
                                          TableQuant(layer.table_quant).granularity)
        self.num_codebooks, self.num_centroids, self.sub_len = centroids.shape
        self.centroids = _const(centroids)
        self.norms = _const((centroids.astype(np.float64) ** 2).sum(-1).astype(np.float32))
        self.tables_q = tables_q
        self.table = _const(tables_q)
        self.scale = _const(column_scale(scale, self.out_features))
        self.bias = _const(np.zeros(self.out_features, dtype=np.float32))


def emit_encode(builder: relax.BlockBuilder, func, name: str, data, consts: LutLayerConstants, codes_shape):
    """Emit ``codes = encode(data, centroids, norms)``; returns the codes var."""
    gvar = builder.add_func(func, name)
    call = relax.call_tir(
        gvar, [data, consts.centroids, consts.norms], relax.TensorType(codes_shape, CODE_DTYPE)
    )
    return builder.emit(call)


def lookup_call(gvar, codes, consts: LutLayerConstants, out_shape) -> relax.Call:
    """The ``lookup(codes, table, scale, bias)`` call producing float32 ``out_shape``."""
    return relax.call_tir(
        gvar,
        [codes, consts.table, consts.scale, consts.bias],
        relax.TensorType(out_shape, "float32"),
    )


def rewrite_relax_functions(mod, rewriter) -> "relax.IRModule":
    """Run a PyExprMutator over every Relax function of ``mod``; returns the new module."""
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.finalize()


@mutator
class PlannedLayerRewriter(PyExprMutator):
    """Replaces every call that ``match`` recognises and the plan names by ``emit``'s result.

    ``emit(builder, call, site, consts)`` emits the LUT kernels and returns the expression
    that stands for the layer's output.
    """

    def __init__(self, mod, plan: Plan, match, emit):
        super().__init__(mod)
        self.layers = plan.by_fingerprint()
        self.match = match
        self.emit = emit

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        site = self.match(call)
        if site is None or site.fingerprint not in self.layers:
            return call
        consts = LutLayerConstants(site, self.layers[site.fingerprint])
        return self.emit(self.builder_, call, site, consts)
