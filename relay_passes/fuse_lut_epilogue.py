"""FuseLUTEpilogue: fold a bias add and a ReLU that follow a LUT lookup into the lookup itself.

Before: RewriteDenseToLUT / RewriteConv2dToLUT emitted ``y = lookup(codes, table, scale,
bias=0)``, followed as the frontends leave it by ``add(y, b)`` or ``add(b, y)`` with a constant
``b`` that varies only along the output-channel axis, and maybe ``relu``. After: one lookup
call with the summed bias and, where a ReLU followed, the ReLU variant of the kernel. Only
fuses when the lookup's result has no other use; the bypassed calls are left for
DeadCodeElimination.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.ir import IRModule, Op
from tvm.ir.transform import PassContext, module_pass
from tvm.relax.expr_functor import PyExprMutator, mutator

from lut_tvm._tvm_compat import constant_value
from schedules.attrs import RELU_ATTR
from schedules.lut_kernels import LOOKUP_KINDS, lookup_func_for

from .epilogue_matching import channel_vector, constant_operand_pairs, fuse_single_use, kernel_kind


@mutator
class _EpilogueFuser(PyExprMutator):
    def __init__(self, mod: IRModule, uses: dict):
        super().__init__(mod)
        self.uses = uses
        self.add_op, self.relu_op = Op.get("relax.add"), Op.get("relax.nn.relu")

    def _lookup_of(self, expr):
        """``(call, kind)`` if ``expr`` is a single-use var bound to a LUT lookup without ReLU."""
        if not isinstance(expr, relax.Var) or self.uses.get(expr, 0) != 1:
            return None
        bound = self.builder_.lookup_binding(expr)
        kind = kernel_kind(self.builder_.get(), bound)
        if kind not in LOOKUP_KINDS or int(self.builder_.get()[bound.args[0]].attrs[RELU_ATTR]):
            return None
        return bound, kind

    def _relaunch(self, call, kind, relu, bias):
        codes, table, scale, _ = call.args[1].fields
        func = lookup_func_for(kind, codes.ty.shape.values, table.ty.shape.values, relu,
                               call.ty.shape.values)
        gvar = self.builder_.add_func(func, f"lut_{kind}" + ("_relu" if relu else ""))
        return relax.call_tir(gvar, [codes, table, scale, bias], call.ty)

    def _fuse_bias(self, call: relax.Call):
        """The lookup with the constant operand of ``add`` summed into its bias, or None."""
        for lhs, rhs in constant_operand_pairs(call):
            found = self._lookup_of(lhs)
            if found is None:
                continue
            lookup, kind = found
            out_shape = [int(d) for d in lookup.ty.shape.values]
            extra = channel_vector(constant_value(rhs), out_shape, 1)
            if extra is not None:
                bias = constant_value(lookup.args[1].fields[3]) + extra.astype(np.float32)
                return self._relaunch(lookup, kind, False, relax.const(bias))
        return None

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if call.op == self.relu_op:
            found = self._lookup_of(call.args[0])
            if found:
                lookup, kind = found
                return self._relaunch(lookup, kind, True, lookup.args[1].fields[3])
        elif call.op == self.add_op:
            fused = self._fuse_bias(call)
            if fused is not None:
                return fused
        return call


@module_pass(opt_level=0, name="FuseLUTEpilogue")
class FuseLUTEpilogue:
    """Fold bias adds and ReLUs into the LUT lookups they follow."""

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        return fuse_single_use(mod, _EpilogueFuser)
