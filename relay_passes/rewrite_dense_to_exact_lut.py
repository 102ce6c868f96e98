"""RewriteDenseToExactLUT: replace planned ``matmul(x, const W)`` by LUT-NA's exact LUT kernel.

Before: ``FoldConstant`` has run, so dense layers read ``matmul(x, const W[D, N])`` (x of rank
>= 2, float32). After: for each matmul whose weight fingerprint the exact plan names, ``x`` is
reshaped to ``[M, D]`` and one ``call_tir`` quantizes it (int8, the plan's ``act_scale``),
computes ``xq @ Wq`` exactly by bit-plane table look-ups over the nonzero groups, and
dequantizes (``float32(acc) * act_scale * w_scale[n]``); the graph's following bias add /
activation stay as they are. ``Wq`` is the plan's quantization of the bound weight. Other
matmuls are left alone.

The look-up form is ``lookup``: ``"gather"`` (``schedules.exact_lut_compute``, per-column skip
lists), ``"shuffle"`` (``schedules.exact_shuffle_compute``, byte shuffles over blocks of 64
columns) or ``"auto"`` (the default): the shuffle form for a current target with a byte shuffle
(AVX2, AVX-512BW, NEON), measured 7-14x faster there (128 x 384 x 384, b = 4 and 8, one
thread), and the gather form otherwise (the shuffle form without a shuffle is scalar, 10x slower).
On AVX-512BW the shuffle form uses whole int16 tables and int16 patterns (``vpermw``, 32 look-ups
per instruction, no byte split), another 1.4-1.6x faster than the byte shuffles.
``emit_exact_layer`` and ``ExactRewritePass`` are shared with ``RewriteConv2dToExactLUT``.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.ir import IRModule
from tvm.ir.transform import PassContext, module_pass
from tvm.relax.expr_functor import PyExprMutator, mutator

from lut_tvm.errors import PlanError
from lut_tvm.exact.plan import ExactLayerPlan, ExactPlan
from lut_tvm.exact.reference import output_scale, pack_exact, pack_exact_blocks
from lut_tvm.weights import LayerKind, output_length
from schedules.exact_lut_compute import exact_lut_conv2d_func, exact_lut_dense_func
from schedules.exact_shuffle_compute import chunk_layout, exact_lut_shuffle_func
from schedules.intrin.exact_shuffle import (
    exact_shuffle_intrin_for_target,
    exact_word_intrin_for_target,
)

from .layer_sites import LayerSite, match_dense
from .lut_layer_builder import rewrite_relax_functions

LOOKUPS = ("auto", "gather", "shuffle")


def _const(array: np.ndarray) -> relax.Expr:
    return relax.const(np.ascontiguousarray(array))


def resolve_lookup(lookup: str) -> str:
    """``gather`` or ``shuffle``; ``auto`` picks shuffle when the current target has one."""
    if lookup not in LOOKUPS:
        raise ValueError(f"exact lookup must be one of {LOOKUPS}, got {lookup!r}")
    if lookup != "auto":
        return lookup
    target = tvm.target.Target.current(allow_none=True)
    return "shuffle" if target is not None and exact_shuffle_intrin_for_target(target) else "gather"


def use_word_tables() -> bool:
    """Whether the current target permutes int16 words (AVX-512BW ``vpermw``: the faster form)."""
    target = tvm.target.Target.current(allow_none=True)
    return target is not None and exact_word_intrin_for_target(target) is not None


def check_layer(site: LayerSite, layer: ExactLayerPlan) -> None:
    """PlanError naming the layer and field if the plan entry does not fit the bound site."""
    if tuple(site.weight.shape) != tuple(layer.weight_shape):
        raise PlanError(f"exact plan layer {layer.name!r}: field 'weight_shape' "
                        f"{list(layer.weight_shape)} does not match the model's weight "
                        f"{list(site.weight.shape)}")
    if LayerKind(layer.kind) is not site.kind:
        raise PlanError(f"exact plan layer {layer.name!r}: field 'kind' is "
                        f"{LayerKind(layer.kind).value}, but it binds a {site.kind.value} weight")
    if layer.piece_bits != 1:
        raise PlanError(f"exact plan layer {layer.name!r}: field 'piece_bits' "
                        f"{layer.piece_bits}: only bit planes (1) are compiled")


def emit_exact_layer(builder: relax.BlockBuilder, data: relax.Expr, site: LayerSite,
                     layer: ExactLayerPlan, input_shape, lookup: str) -> relax.Expr:
    """Emit the exact kernel on ``data`` (``[M, D]`` rows, or NCHW for a conv site);
    returns the ``[M, N]`` float32 call."""
    check_layer(site, layer)
    wq = layer.quantized_weight(site.weight)
    depth, cols = wq.shape
    geometry = site.geometry if site.kind is LayerKind.CONV2D else None
    act_scale = float(np.float32(layer.act_scale))
    if resolve_lookup(lookup) == "shuffle":
        packed = pack_exact_blocks(wq, layer.bits)
        chunks, per_chunk = chunk_layout(packed.max_groups)
        packed = packed.with_entries(chunks * per_chunk)
        word = use_word_tables()
        if word:
            packed.patterns = packed.patterns.astype(np.int16)
        func = exact_lut_shuffle_func(input_shape, geometry, layer.bits, packed.max_groups, cols,
                                      act_scale, word=word)
        name = "exact_lut_shuffle"
    else:
        packed = pack_exact(wq, layer.bits)
        if geometry is None:
            func = exact_lut_dense_func(input_shape[0], depth, layer.bits, packed.max_groups,
                                        cols, act_scale)
        else:
            func = exact_lut_conv2d_func(input_shape, geometry, layer.bits, packed.max_groups,
                                         cols, act_scale)
        name = "exact_lut_dense"
    if geometry is None:
        rows = int(input_shape[0])
    else:
        batch, _, height, width = input_shape
        rows = batch * math.prod(geometry.output_hw(height, width))
    return relax.call_tir(
        builder.add_func(func, name),
        [data, _const(packed.group_index), _const(packed.patterns),
         _const(output_scale(layer.act_scale, layer.w_scale)), _const(np.zeros(cols, np.int32))],
        relax.TensorType((rows, cols), "float32"),
    )


def _emit_exact_dense(builder: relax.BlockBuilder, call: relax.Call, site: LayerSite,
                      layer: ExactLayerPlan, lookup: str) -> relax.Expr:
    *lead, depth = site.input_shape
    rows = math.prod(lead)
    data = call.args[0]
    if len(lead) != 1:
        data = builder.emit(relax.op.reshape(data, (rows, depth)))
    out = emit_exact_layer(builder, data, site, layer, (rows, depth), lookup)
    if len(lead) == 1:
        return out
    return relax.op.reshape(builder.emit(out), (*lead, output_length(site.kind, site.weight.shape)))


@mutator
class ExactLayerRewriter(PyExprMutator):
    """Rewrites the calls that ``match`` finds and the plan names with ``emit``."""

    def __init__(self, mod, plan: ExactPlan, match, emit, lookup: str):
        super().__init__(mod)
        self.layers = plan.by_fingerprint()
        self.match, self.emit, self.lookup = match, emit, lookup

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        site = self.match(call)
        if site is None or site.fingerprint not in self.layers:
            return call
        return self.emit(self.builder_, call, site, self.layers[site.fingerprint], self.lookup)


class ExactRewritePass:
    """The body of an exact-rewrite module pass: rewrites the sites that the subclass's
    ``match`` finds and the plan names with its ``emit`` (both static)."""

    match = emit = None

    def __init__(self, plan: ExactPlan, lookup: str = "auto"):
        self.plan = plan
        self.lookup = lookup

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        return rewrite_relax_functions(
            mod, ExactLayerRewriter(mod, self.plan, self.match, self.emit, self.lookup))


@module_pass(opt_level=0, name="RewriteDenseToExactLUT")
class RewriteDenseToExactLUT(ExactRewritePass):
    """Rewrite the exact plan's dense layers into exact (LUT-NA) LUT kernels."""

    match, emit = staticmethod(match_dense), staticmethod(_emit_exact_dense)
