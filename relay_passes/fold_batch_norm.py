"""FoldBatchNorm: eval-mode batch norms and per-channel scales/shifts after a dense conv2d folded into its weight and bias.

Before: ``conv2d(x, W)`` (constant float32 OIHW weight, NCHW data and output) followed by a chain of
``batch_norm(., gamma, beta, mean, var)[0]`` (``training=False``, channel axis 1, constant operands:
what ONNX BatchNormalization and torch.export's eval-mode ``batch_norm`` import as) and
``add`` / ``subtract`` / ``multiply`` / ``divide`` by constants that vary along the channel axis
only (a conv's bias, Inception's scale and shift), each link the only user of the one before.
After: ``conv2d(x, W * s[:, None, None, None]) + t[None, :, None, None]`` computing the same (up to
float rounding), so the conv2d's epilogue is one bias add and the batch norm's separate passes over
the activations are gone (ResNet-50: 53 batch norms).

Runs at the start of the legalize stage (``compiler.legalize_passes``), after the LUT rewrites: the
conv2ds a plan turns into LUT layers are no longer conv2ds by then, so plans, which name their
layers by the fingerprint of the model's own (unfolded) weights, bind as before. A chain link
with another user (a conv output also read elsewhere) ends the chain there.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.ir import IRModule, Op
from tvm.ir.transform import PassContext, module_pass
from tvm.relax.expr_functor import PyExprMutator, PyExprVisitor, mutator, visitor

from lut_tvm._tvm_compat import constant_value, is_constant

from .layer_sites import is_constant_nchw_conv2d
from .planned_rewriter import rewrite_relax_functions

# Elementwise ops with a constant operand: how each updates (scale s, shift t) of y = conv * s + t.
_AFFINE = {
    "relax.add": lambda s, t, c: (s, t + c),
    "relax.subtract": lambda s, t, c: (s, t - c),
    "relax.multiply": lambda s, t, c: (s * c, t * c),
    "relax.divide": lambda s, t, c: (s / c, t / c),
}
_COMMUTATIVE = ("relax.add", "relax.multiply")


def per_channel(value: np.ndarray, channels: int) -> np.ndarray | None:
    """A float32 constant that broadcasts against ``[N, channels, H, W]`` along the channel axis
    only, as a ``[channels]`` float64 vector; None for any other constant."""
    if value.dtype != np.float32 or value.ndim > 4:
        return None
    full = value.reshape((1,) * (4 - value.ndim) + value.shape)
    if full.shape[0] != 1 or full.shape[2:] != (1, 1) or full.shape[1] not in (1, channels):
        return None
    return np.broadcast_to(full[0, :, 0, 0].astype(np.float64), (channels,))


def batch_norm_affine(call: relax.Call, channels: int):
    """(scale, shift) of an eval-mode channel-axis ``batch_norm`` with constant operands, or None."""
    attrs = call.attrs
    if bool(getattr(attrs, "training", False)) or int(attrs.axis) not in (1, -3):
        return None
    if not all(is_constant(arg) for arg in call.args[1:]):
        return None
    gamma, beta, mean, var = (constant_value(arg).astype(np.float64) for arg in call.args[1:])
    if any(v.shape != (channels,) for v in (gamma, beta, mean, var)):
        return None
    gamma = gamma if bool(attrs.scale) else np.ones(channels)
    beta = beta if bool(attrs.center) else np.zeros(channels)
    scale = gamma / np.sqrt(var + float(attrs.epsilon))
    return scale, beta - mean * scale


@visitor
class _CountUses(PyExprVisitor):
    def __init__(self):
        super().__init__()
        self.uses: dict = {}

    def visit_var_(self, var: relax.Var) -> None:  # pylint: disable=arguments-renamed
        self.uses[var] = self.uses.get(var, 0) + 1

    def visit_dataflow_var_(self, var: relax.DataflowVar) -> None:  # pylint: disable=arguments-renamed
        self.uses[var] = self.uses.get(var, 0) + 1


def _chains(func: relax.Function) -> tuple[dict, set]:
    """``({last var of a chain: (conv2d call, scale, shift)}, {vars folded into a later link})``."""
    counter = _CountUses()
    counter.visit_expr(func)
    uses = counter.uses
    open_chains, absorbed, tuples = {}, set(), {}
    for block in func.body.blocks:
        for binding in block.bindings:
            var, value = binding.var, binding.value
            if is_constant_nchw_conv2d(value) and constant_value(value.args[1]).dtype == np.float32:
                channels = int(constant_value(value.args[1]).shape[0])
                open_chains[var] = (value, np.ones(channels), np.zeros(channels), ())
                continue
            found = _link(value, open_chains, uses, tuples)
            if found is not None:
                source, scale, shift, via = found
                conv, old_scale, old_shift, links = open_chains.pop(source)
                absorbed.update((source, *via))
                open_chains[var] = (conv, old_scale * scale, old_shift * scale + shift, links + (var,))
            elif isinstance(value, relax.Call) and isinstance(value.op, Op) and value.op.name == "relax.nn.batch_norm":
                tuples[var] = value
    return {var: chain[:3] for var, chain in open_chains.items() if chain[3]}, absorbed


def _link(value, open_chains: dict, uses: dict, tuples: dict):
    """``(chain var, scale, shift, extra absorbed vars)`` when ``value`` extends an open chain."""
    if isinstance(value, relax.TupleGetItem) and value.index == 0 and value.tuple_value in tuples:
        bn = tuples[value.tuple_value]
        source = bn.args[0]
        if source in open_chains and uses.get(source) == 1 and uses.get(value.tuple_value) == 1:
            affine = batch_norm_affine(bn, len(open_chains[source][1]))
            if affine is not None:
                return source, *affine, (value.tuple_value,)
        return None
    if not (isinstance(value, relax.Call) and isinstance(value.op, Op) and value.op.name in _AFFINE):
        return None
    a, b = value.args
    if value.op.name in _COMMUTATIVE and is_constant(a):
        a, b = b, a
    if a not in open_chains or uses.get(a) != 1 or not is_constant(b):
        return None
    const = per_channel(constant_value(b), len(open_chains[a][1]))
    if const is None or (value.op.name == "relax.divide" and not const.all()):
        return None
    scale, shift = _AFFINE[value.op.name](np.ones_like(const), np.zeros_like(const), const)
    return a, scale, shift, ()


@mutator
class _Fold(PyExprMutator):
    def __init__(self, mod: IRModule, folded: dict, absorbed: set):
        super().__init__(mod)
        self.folded, self.absorbed = folded, absorbed

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:  # pylint: disable=arguments-renamed
        var = binding.var
        if var in self.absorbed:
            return  # its only user is the chain's last link, rewritten below
        if var not in self.folded:
            super().visit_var_binding_(binding)
            return
        conv, scale, shift = self.folded[var]
        weight = constant_value(conv.args[1]).astype(np.float64) * scale[:, None, None, None]
        conv_var = self.builder_.emit(relax.Call(conv.op, [self.visit_expr(conv.args[0]),
                                                           relax.const(weight.astype(np.float32))], conv.attrs))
        value = relax.op.add(conv_var, relax.const(shift.astype(np.float32).reshape(1, -1, 1, 1)))
        outside = isinstance(var, relax.DataflowVar) or not self.builder_.current_block_is_dataflow()
        new_var = self.builder_.emit(value) if outside else self.builder_.emit_output(value)
        self.set_var_remap(var, new_var)


@module_pass(opt_level=0, name="FoldBatchNorm")
class FoldBatchNorm:
    """Eval-mode batch norms and per-channel affine ops after constant-weight conv2ds into the conv2d."""

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        folded, absorbed = {}, set()
        for _, func in mod.functions_items():
            if isinstance(func, relax.Function) and isinstance(func.body, relax.SeqExpr):
                found = _chains(func)
                folded.update(found[0])
                absorbed.update(found[1])
        if not folded:
            return mod
        return rewrite_relax_functions(mod, _Fold(mod, folded, absorbed))
