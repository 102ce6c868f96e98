"""Helpers shared by the passes that read the rewritten kernels: use counts, kernel kinds,
channel bias vectors, the epilogue-fusion driver."""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.ir import GlobalVar, IRModule, Op
from tvm.relax.expr_functor import PyExprMutator, PyExprVisitor, visitor

from lut_tvm._tvm_compat import is_constant
from schedules.attrs import LUT_KIND_ATTR

from .planned_rewriter import rewrite_relax_functions


@visitor
class UseCounter(PyExprVisitor):
    """Counts the uses of each var (``uses[var]``) in the expressions it visits."""

    def __init__(self):
        super().__init__()
        self.uses: dict = {}

    def visit_var_(self, var):  # pylint: disable=arguments-renamed
        self.uses[var] = self.uses.get(var, 0) + 1

    def visit_dataflow_var_(self, var):  # pylint: disable=arguments-renamed
        self.uses[var] = self.uses.get(var, 0) + 1


def kernel_kind(mod: IRModule, expr) -> str | None:
    """The LutKind of ``expr`` if it is a ``call_tir`` of one of our tagged PrimFuncs in ``mod``."""
    if not (isinstance(expr, relax.Call) and expr.op == Op.get("relax.call_tir")
            and isinstance(expr.args[0], GlobalVar)):
        return None
    func = mod[expr.args[0]]
    if func.attrs is None or LUT_KIND_ATTR not in func.attrs:
        return None
    return str(func.attrs[LUT_KIND_ATTR])


def constant_operand_pairs(call: relax.Call):
    """``(other, constant)`` for each order of a binary call's operands whose second is a constant."""
    return [(lhs, rhs) for lhs, rhs in (call.args, list(reversed(call.args)))
            if is_constant(rhs)]


def channel_vector(bias: np.ndarray, out_shape, channel_axis: int) -> np.ndarray | None:
    """``bias`` as a vector over the channel axis if it broadcasts along that axis only."""
    rank = len(out_shape)
    if bias.ndim > rank:
        return None
    full = (1,) * (rank - bias.ndim) + tuple(bias.shape)
    if any(size != 1 for axis, size in enumerate(full) if axis != channel_axis):
        return None
    vector = bias.reshape(-1)
    if vector.size == 1:
        vector = np.full(out_shape[channel_axis], vector[0], dtype=np.float32)
    return vector if vector.size == out_shape[channel_axis] else None


def fuse_single_use(mod: IRModule, fuser: type[PyExprMutator]) -> IRModule:
    """``mod`` rewritten by ``fuser(mod, uses)`` (``uses`` counted over all its Relax
    functions), then DeadCodeElimination for the calls the fuser bypassed."""
    counter = UseCounter()
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            counter.visit_expr(func)
    return relax.transform.DeadCodeElimination()(
        rewrite_relax_functions(mod, fuser(mod, counter.uses))
    )
