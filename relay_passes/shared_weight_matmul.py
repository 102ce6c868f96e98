"""SharedWeightMatmul: a batched matmul against a constant whose batch slices are all one matrix, as a plain matmul.

Before: ``matmul(x [..., M, D], const W [B..., D, N])`` where every ``W[b]`` equals ``W[0]`` (what
``torch.export`` leaves of ``nn.MultiheadAttention``'s packed ``in_proj`` once ``FoldConstant`` has
folded the ``broadcast_to`` of its weight: a ``[L, D, 3D]`` constant of ``L`` identical copies), and
the output shape is ``x``'s batch dims with ``[M, N]`` (the weight's batch dims broadcast into ``x``'s).
After: ``matmul(x, const W[0] [D, N])``, same values and shape. Run at import, before layer
discovery: the matmul is then an ordinary dense site whose weight (and fingerprint) is the layer's
own ``[D, N]`` weight, the one the ONNX import of the model shows. Other matmuls are left unchanged.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.ir import IRModule, Op
from tvm.ir.transform import PassContext, module_pass
from tvm.relax.expr_functor import PyExprMutator, mutator

from lut_tvm._tvm_compat import constant_value, is_constant

from .layer_sites import static_shape
from .planned_rewriter import rewrite_relax_functions


def shared_matrix(call: relax.Call) -> np.ndarray | None:
    """The one ``[D, N]`` matrix of a batched constant matmul weight whose slices are all equal, if
    replacing the weight by it keeps the call's output shape; else None."""
    data, weight = call.args
    if not is_constant(weight):
        return None
    stacked = constant_value(weight)
    data_shape, out_shape = static_shape(data), static_shape(call)
    if stacked.ndim < 3 or data_shape is None or out_shape is None or stacked.dtype != np.float32:
        return None
    if len(data_shape) < stacked.ndim or out_shape != (*data_shape[:-1], stacked.shape[-1]):
        return None
    matrices = stacked.reshape(-1, *stacked.shape[-2:])
    if not (matrices == matrices[:1]).all():
        return None
    return np.ascontiguousarray(matrices[0])


@mutator
class _SharedWeightToMatrix(PyExprMutator):
    def __init__(self, mod: IRModule):
        super().__init__(mod)
        self.matmul_op = Op.get("relax.matmul")

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        matrix = shared_matrix(call) if call.op == self.matmul_op else None  # typed before the rewrite
        call = super().visit_call_(call)
        if matrix is None:
            return call
        return relax.op.matmul(call.args[0], relax.const(matrix), out_dtype=call.attrs.out_dtype)


@module_pass(opt_level=0, name="SharedWeightMatmul")
class SharedWeightMatmul:
    """Rewrite ``matmul(x, const W[B..., D, N])`` with identical slices ``W[b]`` into ``matmul(x, W[0])``."""

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        return rewrite_relax_functions(mod, _SharedWeightToMatrix(mod))
