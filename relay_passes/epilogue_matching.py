"""Helpers shared by the epilogue-fusion passes: use counts, channel bias vectors, the driver."""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.ir import IRModule
from tvm.relax.expr_functor import PyExprMutator, PyExprVisitor, visitor

from .lut_layer_builder import rewrite_relax_functions


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
