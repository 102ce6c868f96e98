"""RewriteDenseToExactLUT: replace planned ``matmul(x, const W)`` by LUT-NA's exact LUT kernel.

Before: ``FoldConstant`` has run, so dense layers read ``matmul(x, const W[D, N])`` (x of rank
>= 2, float32). After: for each matmul whose weight fingerprint the exact plan names, ``x`` is
reshaped to ``[M, D]`` and one ``call_tir(exact_lut_dense)`` quantizes it (int8, the plan's
``act_scale``), computes ``xq @ Wq`` exactly by bit-plane table look-ups over the nonzero
groups, and dequantizes (``float32(acc) * act_scale * w_scale[n]``); the graph's following bias
add / activation stay as they are. ``Wq`` is the plan's quantization of the bound weight. Other
matmuls are left alone.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax
from tvm.ir import IRModule
from tvm.ir.transform import PassContext, module_pass
from tvm.relax.expr_functor import PyExprMutator, mutator

from lut_tvm.errors import PlanError
from lut_tvm.exact.plan import ExactLayerPlan, ExactPlan
from lut_tvm.exact.reference import output_scale, pack_exact
from lut_tvm.weights import LayerKind
from schedules.exact_lut_compute import exact_lut_dense_func

from .layer_sites import match_dense


def _const(array: np.ndarray) -> relax.Expr:
    return relax.const(np.ascontiguousarray(array))


def _emit_exact_dense(builder: relax.BlockBuilder, call: relax.Call, site,
                      layer: ExactLayerPlan) -> relax.Expr:
    if tuple(site.weight.shape) != tuple(layer.weight_shape):
        raise PlanError(f"exact plan layer {layer.name!r}: field 'weight_shape' "
                        f"{list(layer.weight_shape)} does not match the model's weight "
                        f"{list(site.weight.shape)}")
    if LayerKind(layer.kind) is not LayerKind.DENSE:
        raise PlanError(f"exact plan layer {layer.name!r}: field 'kind' is "
                        f"{LayerKind(layer.kind).value}, but it binds a dense weight")
    if layer.piece_bits != 1:
        raise PlanError(f"exact plan layer {layer.name!r}: field 'piece_bits' "
                        f"{layer.piece_bits}: only bit planes (1) are compiled")
    *lead, depth = site.input_shape
    rows = math.prod(lead)
    packed = pack_exact(layer.quantized_weight(site.weight), layer.bits)
    cols = packed.out_features
    data = call.args[0]
    if len(lead) != 1:
        data = builder.emit(relax.op.reshape(data, (rows, depth)))
    func = exact_lut_dense_func(rows, depth, layer.bits, packed.max_groups, cols,
                                float(np.float32(layer.act_scale)))
    gvar = builder.add_func(func, "exact_lut_dense")
    out = relax.call_tir(
        gvar,
        [data, _const(packed.group_index), _const(packed.patterns),
         _const(output_scale(layer.act_scale, layer.w_scale)), _const(np.zeros(cols, np.int32))],
        relax.TensorType((rows, cols), "float32"),
    )
    if len(lead) == 1:
        return out
    return relax.op.reshape(builder.emit(out), (*lead, cols))


@mutator
class _ExactDenseRewriter(PyExprMutator):
    def __init__(self, mod, plan: ExactPlan):
        super().__init__(mod)
        self.layers = plan.by_fingerprint()

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        site = match_dense(call)
        if site is None or site.fingerprint not in self.layers:
            return call
        return _emit_exact_dense(self.builder_, call, site, self.layers[site.fingerprint])


@module_pass(opt_level=0, name="RewriteDenseToExactLUT")
class RewriteDenseToExactLUT:
    """Rewrite the exact plan's dense layers into exact (LUT-NA) LUT kernels."""

    def __init__(self, plan: ExactPlan):
        self.plan = plan

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        rewriter = _ExactDenseRewriter(mod, self.plan)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.finalize()
