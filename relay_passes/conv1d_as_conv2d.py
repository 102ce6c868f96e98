"""Conv1dAsConv2d: every NCW/OIW ``relax.nn.conv1d`` with groups = 1 as the equivalent height-1 conv2d.

Before: ``relax.nn.conv1d(x, w)`` with data/out layout NCW, kernel layout OIW, groups 1 (what the
torch and ONNX frontends emit for ``nn.Conv1d`` / a 1-D ``Conv``), any stride, padding and dilation.
After: ``squeeze(conv2d(expand_dims(x, 2), w4), [2])`` with the conv2d NCHW/OIHW, kernel ``(1, k)``,
strides ``(1, s)``, padding ``(0, left, 0, right)``, dilation ``(1, d)``; ``w4`` is the ``[O, I, 1, k]``
weight, a constant when ``w`` is one (else ``expand_dims(w, 2)``). Run at import, before layer
discovery: the conv2d is then an ordinary LUT-able conv2d site whose weight fingerprint is that of
the ``[O, I, 1, k]`` weight, which is what ``lut_tvm.train``'s ``LutConv1d`` writes into a plan.
Grouped conv1ds and other layouts are left unchanged.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.ir import IRModule, Op
from tvm.ir.transform import PassContext, module_pass
from tvm.relax.expr_functor import PyExprMutator, mutator

from lut_tvm._tvm_compat import constant_value, is_constant

from .planned_rewriter import rewrite_relax_functions


def height_one_weight(weight: relax.Expr) -> relax.Expr:
    """``[O, I, k]`` -> ``[O, I, 1, k]``: folded into a new constant when ``weight`` is one."""
    if is_constant(weight):
        return relax.const(np.ascontiguousarray(constant_value(weight)[:, :, None, :]))
    return relax.op.expand_dims(weight, axis=2)


@mutator
class _Conv1dToConv2d(PyExprMutator):
    def __init__(self, mod: IRModule):
        super().__init__(mod)
        self.conv1d_op = Op.get("relax.nn.conv1d")

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if call.op != self.conv1d_op:
            return call
        attrs = call.attrs
        if (int(attrs.groups) != 1 or str(attrs.data_layout) != "NCW" or str(attrs.kernel_layout) != "OIW"
                or str(attrs.out_layout) != "NCW"):
            return call
        data, weight = call.args
        left, right = (int(p) for p in attrs.padding)
        conv = relax.op.nn.conv2d(
            self.builder_.emit(relax.op.expand_dims(data, axis=2)),
            height_one_weight(weight),
            strides=[1, int(attrs.strides[0])],
            padding=[0, left, 0, right],
            dilation=[1, int(attrs.dilation[0])],
            groups=1,
            data_layout="NCHW",
            kernel_layout="OIHW",
            out_layout="NCHW",
            out_dtype=attrs.out_dtype,
        )
        return relax.op.squeeze(self.builder_.emit(conv), axis=[2])


@module_pass(opt_level=0, name="Conv1dAsConv2d")
class Conv1dAsConv2d:
    """Rewrite NCW/OIW conv1d (groups = 1) into expand_dims -> height-1 conv2d -> squeeze."""

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        return rewrite_relax_functions(mod, _Conv1dToConv2d(mod))
