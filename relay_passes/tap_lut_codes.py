"""TapLUTCodes: make ``main`` also return the codes of every LUT-NN encode, for exactness tests.

Before: the LUT rewrite has run (RewriteDenseToLUT / RewriteConv2dToLUT, FuseLUTEpilogue), so each
planned layer is an encode call_tir (a PrimFunc tagged with an encode LutKind) feeding a lookup.
After: ``main`` returns ``(result, codes_0, codes_1, ...)``: its former result, then the uint8
output of each encode call in binding order (the layers' forward order), in the encode's own
layout (``encode_calls`` says which kind each one is). Nothing else changes: a dataflow block
binds each tapped value to one extra output var, so fusion is unaffected.
"""

from __future__ import annotations

from tvm import relax
from tvm.ir import IRModule
from tvm.ir.transform import PassContext, module_pass

from schedules.attrs import LutKind

from .epilogue_matching import kernel_kind

ENCODE_KINDS = (LutKind.ENCODE_DENSE, LutKind.ENCODE_CONV2D, LutKind.ENCODE_DENSE_ROWS,
                LutKind.ENCODE_CONV2D_ROWS, LutKind.ENCODE_DENSE_ROWS_INT8)


def _encode_kind(mod: IRModule, value) -> str | None:
    kind = kernel_kind(mod, value)
    return kind if kind in ENCODE_KINDS else None


def encode_calls(mod: IRModule) -> list[tuple[relax.Var, str]]:
    """``(bound var, LutKind)`` of every encode call_tir bound in ``main``, in binding order."""
    found = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            kind = _encode_kind(mod, binding.value)
            if kind is not None:
                found.append((binding.var, kind))
    return found


@module_pass(opt_level=0, name="TapLUTCodes")
class TapLUTCodes:
    """Append the codes of every encode call to ``main``'s result (see the module doc)."""

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        main_var = mod.get_global_var("main")
        func = mod[main_var]
        blocks, taps = [], []
        for block in func.body.blocks:
            bindings = []
            for binding in block.bindings:
                bindings.append(binding)
                if _encode_kind(mod, binding.value) is None:
                    continue
                tap = binding.var
                if isinstance(block, relax.DataflowBlock):  # a dataflow var cannot leave its block
                    tap = relax.Var(f"codes_{len(taps)}", binding.var.ty)
                    bindings.append(relax.VarBinding(tap, binding.var))
                taps.append(tap)
            blocks.append(type(block)(bindings))
        result = relax.BlockBuilder().normalize(relax.Tuple([func.body.body, *taps]))
        body = relax.SeqExpr(blocks, result)
        mod = IRModule(dict(mod.functions_items()), attrs=mod.attrs, global_infos=mod.global_infos)
        mod[main_var] = relax.Function(
            func.params, body, ret_ty=result.ty, is_pure=func.is_pure, attrs=func.attrs
        )
        return relax.transform.Normalize()(mod)  # the new body's type
