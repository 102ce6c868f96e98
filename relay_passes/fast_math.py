"""FastMath: GELU, softmax, exp, erf and tanh in TVM's vectorizable polynomial forms.

LLVM lowers ``exp``/``erf``/``tanh`` of a vector to one libm call per lane, so an elementwise
GELU or a softmax under any schedule runs at scalar speed (on all-MiniLM-L6-v2 at one thread
GELU and softmax took 61% of the whole LUT model's time). TVM's ``topi.fast_exp``,
``topi.fast_erf`` and ``topi.fast_tanh`` are polynomial/rational forms that vectorize, with a
float32 error of a few ulp (``fast_exp`` clamps its input to [-88.4, 88.4]: ``exp(-inf)`` of a
masked softmax entry becomes ~1e-38, not 0).

The pass rewrites ``nn.gelu`` (erf form) and ``nn.gelu_tanh`` here, as ``call_te`` of the same
formula as their legalization with the fast function, then runs TVM's ``FastMathTransform`` for
``nn.softmax``, ``exp``, ``erf`` and ``tanh``. It runs before ``LegalizeOps``.
"""

from __future__ import annotations

import math

from tvm import relax, tirx, topi
from tvm.ir import IRModule, Op
from tvm.ir.transform import PassContext, module_pass
from tvm.relax.expr_functor import PyExprMutator, mutator

from .planned_rewriter import rewrite_relax_functions


def _gelu_erf(x):
    """``x * (0.5 + 0.5 * erf(x / sqrt(2)))`` with ``fast_erf``."""
    half = tirx.const(0.5, x.dtype)
    return x * (half + topi.fast_erf(x * tirx.const(0.5 ** 0.5, x.dtype)) * half)


def _gelu_tanh(x):
    """``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`` with ``fast_tanh``."""
    inner = tirx.const(math.sqrt(2.0 / math.pi), x.dtype) * x * (
        tirx.const(1.0, x.dtype) + tirx.const(0.044715, x.dtype) * x * x)
    return tirx.const(0.5, x.dtype) * x * (tirx.const(1.0, x.dtype) + topi.fast_tanh(inner))


_FAST_GELU = {"relax.nn.gelu": (_gelu_erf, "gelu"), "relax.nn.gelu_tanh": (_gelu_tanh, "gelu_tanh")}


@mutator
class _GeluRewriter(PyExprMutator):
    """Replaces float32 GELU calls by ``call_te`` of their fast forms."""

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if not isinstance(call.op, Op) or call.op.name not in _FAST_GELU:
            return call
        if getattr(call.args[0].ty, "dtype", None) != "float32":
            return call  # float16 keeps TVM's legalization (it computes erf in float32)
        formula, name = _FAST_GELU[call.op.name]
        return self.builder_.call_te(formula, call.args[0], primfunc_name_hint=name)


@module_pass(opt_level=0, name="FastMath")
class FastMath:
    """The module with GELU/softmax/exp/erf/tanh in their fast forms (see the module doc)."""

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        return relax.transform.FastMathTransform()(rewrite_relax_functions(mod, _GeluRewriter(mod)))
