"""FuseExactBias: fold a constant bias add after an exact (LUT-NA) kernel into its int32 bias.

Before: RewriteDenseToExactLUT / RewriteConv2dToExactLUT emitted
``y = exact(x, group_index, patterns, out_scale, bias_q = 0)`` (``[M, N]``), maybe followed by
``reshape`` (dense of rank > 2; conv to NHWC) and ``permute_dims`` (conv back to NCHW), and the
frontends' ``add(y, b)`` / ``add(b, y)`` with a constant ``b`` varying along the channel axis
only. After: one kernel call with ``bias_q = rint(b / out_scale)`` (``reference.quantize_bias``),
the layout ops re-emitted on it, and no add: the output is
``float32(acc + bias_q) * out_scale``, the quantized layer of ``lut_tvm.exact.reference``
exactly (a float add after the kernel would round differently). Each var on the way must have
one use. A ReLU after it stays in the graph: ``max(y, 0)`` is exact wherever it runs. The
bypassed calls are removed by DeadCodeElimination.
"""

from __future__ import annotations

from tvm import relax
from tvm.ir import IRModule, Op
from tvm.ir.transform import PassContext, module_pass
from tvm.relax.expr_functor import PyExprMutator, mutator

from lut_tvm._tvm_compat import constant_value
from lut_tvm.exact.reference import quantize_bias
from schedules.exact_lut_compute import EXACT_LUT_DENSE
from schedules.exact_shuffle_compute import EXACT_LUT_SHUFFLE
from schedules.tmac_compute import TMAC_KIND

from .epilogue_matching import channel_vector, constant_operand_pairs, fuse_single_use, kernel_kind

EXACT_KINDS = (EXACT_LUT_DENSE, EXACT_LUT_SHUFFLE, TMAC_KIND)
_LAYOUT_OPS = ("relax.reshape", "relax.permute_dims")
_SCALE_ARG, _BIAS_ARG = -2, -1  # (x, <packed weight>..., out_scale, bias_q)


@mutator
class _BiasFuser(PyExprMutator):
    def __init__(self, mod: IRModule, uses: dict):
        super().__init__(mod)
        self.uses = uses
        self.add_op = Op.get("relax.add")

    def _exact_chain(self, expr):
        """``(kernel call, layout calls outermost first, channel axis of expr)`` or None."""
        chain = []
        while isinstance(expr, relax.Var) and self.uses.get(expr, 0) == 1:
            bound = self.builder_.lookup_binding(expr)
            if not isinstance(bound, relax.Call) or not isinstance(bound.op, Op):
                return None
            if kernel_kind(self.builder_.get(), bound) in EXACT_KINDS:
                axis = _channel_axis(bound, chain)
                return None if axis is None else (bound, chain, axis)
            if bound.op.name not in _LAYOUT_OPS:
                return None
            chain.append(bound)
            expr = bound.args[0]
        return None

    def _fused(self, found, bias: relax.Expr, out_shape) -> relax.Expr | None:
        """The kernel with ``bias`` quantized into its int32 bias, layout ops re-emitted, or None."""
        kernel, chain, axis = found
        vector = channel_vector(constant_value(bias), out_shape, axis)
        if vector is None or vector.dtype.kind != "f":
            return None
        args = list(kernel.args[1].fields)
        out_scale = constant_value(args[_SCALE_ARG])
        args[_BIAS_ARG] = relax.const(constant_value(args[_BIAS_ARG]) + quantize_bias(vector, out_scale))
        expr = relax.call_tir(kernel.args[0], args, kernel.ty)
        for layout in reversed(chain):
            expr = _relayout(layout, self.builder_.emit(expr))
        return expr

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if call.op != self.add_op:
            return call
        for lhs, rhs in constant_operand_pairs(call):
            found = self._exact_chain(lhs)
            fused = None if found is None else self._fused(found, rhs, [int(d) for d in lhs.ty.shape.values])
            if fused is not None:
                return fused
        return call


def _relayout(layout: relax.Call, data: relax.Expr) -> relax.Expr:
    """``layout`` (a reshape or permute_dims) applied to ``data`` instead of its input."""
    if layout.op.name == "relax.reshape":
        return relax.op.reshape(data, layout.args[1])
    return relax.op.permute_dims(data, [int(a) for a in layout.attrs.axes])


def _channel_axis(kernel: relax.Call, chain: list):
    """Where the kernel's column axis (1 of ``[M, N]``) ends up after ``chain``, or None."""
    axis, cols = 1, int(kernel.ty.shape.values[1])
    for layout in reversed(chain):
        shape = [int(d) for d in layout.ty.shape.values]
        if layout.op.name == "relax.reshape":
            rank_in = len(layout.args[0].ty.shape.values)
            if axis != rank_in - 1 or shape[-1] != cols:
                return None  # the channel axis must stay the last one through a reshape
            axis = len(shape) - 1
        else:
            axis = [int(a) for a in layout.attrs.axes].index(axis)
    return axis


@module_pass(opt_level=0, name="FuseExactBias")
class FuseExactBias:
    """Fold constant bias adds into the int32 bias of the exact kernels they follow."""

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        return fuse_single_use(mod, _BiasFuser)
