"""The base of the plan-driven rewrite passes: find a plan's layers in Relax and emit their kernels.

``PlannedRewritePass`` is the body of the four rewrite module passes (LUT-NN and LUT-NA, dense and
conv2d) for any plan kind (``lut_tvm.plan.PlanKind``): it visits every call of every Relax
function, asks the pass's ``match`` (``layer_sites.match_dense`` / ``match_conv2d``) for a
``LayerSite``, looks the site's weight fingerprint up in the plan, checks the plan entry against
the bound weight (shape and kind; a PlanError names the layer and field), and replaces the call by
what the pass's ``emit`` returns. Calls the plan does not name are left alone. Also here: what
every ``emit`` uses (constants, a kernel's ``call_tir``, a dense input as ``[M, D]`` rows).
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax
from tvm.ir import IRModule
from tvm.ir.transform import PassContext
from tvm.relax.expr_functor import PyExprMutator, mutator

from lut_tvm.errors import PlanError
from lut_tvm.plan import LayerMode
from lut_tvm.weights import LayerKind

from .layer_sites import LayerSite


def const(array: np.ndarray) -> relax.Constant:
    """A Relax constant of ``array`` (made contiguous)."""
    return relax.const(np.ascontiguousarray(array))


def kernel_call(builder: relax.BlockBuilder, func, name: str, args, out_shape,
                dtype: str = "float32") -> relax.Call:
    """``call_tir`` of the PrimFunc ``func`` (added to the module as ``name``) on ``args``."""
    return relax.call_tir(builder.add_func(func, name), args, relax.TensorType(out_shape, dtype))


def rewrite_relax_functions(mod: IRModule, rewriter: PyExprMutator) -> IRModule:
    """Run a PyExprMutator over every Relax function of ``mod``; returns the new module."""
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.finalize()


def check_site(label: str, site: LayerSite, layer) -> None:
    """PlanError naming the layer and field if the plan entry does not fit the bound weight
    (``label``: how messages name the plan kind)."""
    if tuple(site.weight.shape) != tuple(layer.weight_shape):
        raise PlanError(f"{label} layer {layer.name!r}: field 'weight_shape' "
                        f"{list(layer.weight_shape)} does not match the model's weight "
                        f"{list(site.weight.shape)}")
    if LayerKind(layer.kind) is not site.kind:
        raise PlanError(f"{label} layer {layer.name!r}: field 'kind' is "
                        f"{LayerKind(layer.kind).value}, but it binds a {site.kind.value} weight")


def emit_on_rows(builder: relax.BlockBuilder, call: relax.Call, site: LayerSite, out_features: int,
                 emit_rows) -> relax.Expr:
    """A dense layer on its input ``x [..., D]`` as rows: ``emit_rows(data, (M, D))`` on ``x``
    reshaped to ``[M, D]`` (as is when it has rank 2) returns the ``[M, N]`` result, reshaped back
    to ``[..., N]``."""
    *lead, depth = site.input_shape
    rows = math.prod(lead)
    data = call.args[0]
    if len(lead) != 1:
        data = builder.emit(relax.op.reshape(data, (rows, depth)))
    out = emit_rows(data, (rows, depth))
    if len(lead) == 1:
        return out
    return relax.op.reshape(builder.emit(out), (*lead, out_features))


@mutator
class _PlannedLayerMutator(PyExprMutator):
    """Replaces every call the pass's ``match`` recognises and its plan names by ``emit``'s result."""

    def __init__(self, mod: IRModule, rewrite: "PlannedRewritePass"):
        super().__init__(mod)
        self.rewrite = rewrite
        self.layers = {key: layer for key, layer in rewrite.plan.by_fingerprint().items()
                       if getattr(layer, "mode", LayerMode.LUT) in rewrite.modes}

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        site = self.rewrite.match(call)
        layer = self.layers.get(site.fingerprint) if site is not None else None
        if layer is None:
            return call
        check_site(self.rewrite.plan.LABEL, site, layer)
        return self.rewrite.emit(self.builder_, call, site, layer)


class PlannedRewritePass:
    """The body of a plan-driven rewrite module pass.

    A subclass sets ``match`` (a ``staticmethod`` of ``layer_sites``) and defines
    ``emit(builder, call, site, layer)``: emit the layer's kernels with ``builder`` and return
    the expression that stands for the layer's output. ``modes``: the plan layers' modes the
    pass rewrites (``plan.LayerMode``; a plan kind without modes counts as lut).
    """

    match = None
    modes = (LayerMode.LUT,)

    def __init__(self, plan):
        self.plan = plan

    def emit(self, builder: relax.BlockBuilder, call: relax.Call, site: LayerSite, layer) -> relax.Expr:
        """The layer's replacement (see the class doc)."""
        raise NotImplementedError

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        return rewrite_relax_functions(mod, _PlannedLayerMutator(mod, self))
