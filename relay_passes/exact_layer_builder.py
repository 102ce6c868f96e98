"""What the two LUT-NA (exact) rewrite passes share: the look-up form and the exact kernel's call.

``ExactRewritePass`` is their pass body (a ``PlannedRewritePass`` with a ``lookup`` choice);
``emit_exact_layer`` emits one ``call_tir`` that quantizes the input (int8, the plan's
``act_scale``), computes ``xq @ Wq`` exactly by bit-plane table look-ups over the nonzero groups
and dequantizes it (``float32(acc) * act_scale * w_scale[n]``) to ``[M, N]``; ``Wq`` is the plan's
quantization of the bound weight, and the int32 bias is zero (``FuseExactBias`` fills it).

The look-up form is ``lookup``: ``"gather"`` (``schedules.exact_lut_compute``, per-column skip
lists), ``"shuffle"`` (``schedules.exact_shuffle_compute``, byte shuffles over blocks of 64
columns), ``"tmac"`` (``schedules.tmac_compute``: per-call tables, nibble-packed weights, the
shuffle on register-held tables for 64 (AVX-512BW), 32 (AVX2) or 16 (NEON) columns x several
rows at once) or ``"auto"`` (the default): the T-MAC form where the current target has a byte
shuffle (x86: 128 x 384 x 384 dense, one thread, CPU time: 84 / 176 / 412 us at 2 / 4 / 8 bits
against 222 / 384 / 752 us of the shuffle form's word permute; NEON, where no ARM CPU was
timed: half the shuffle form's weight bytes (two patterns a byte) and, in the innermost loop,
10.1-11.4 instructions per 16 look-ups against 13.4-14.5 at M = 32, 14.1-15.2 against 12.8-14.0
at M = 1, ``benchmarks/results/tmac_arm64.md``), else the gather form. The T-MAC form
does not skip pruned groups; 1-bit {-1, +1} weights run only in it.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax

from lut_tvm.errors import PlanError
from lut_tvm.exact.plan import ExactLayerPlan, ExactPlan
from lut_tvm.exact.reference import output_scale, pack_exact, pack_exact_blocks
from lut_tvm.exact.reference.tmac import pack_tmac
from lut_tvm.weights import LayerKind
from schedules.exact_lut_compute import exact_lut_conv2d_func, exact_lut_dense_func
from schedules.exact_shuffle_compute import chunk_layout, exact_lut_shuffle_func
from schedules.intrin.exact_shuffle import (
    exact_shuffle_intrin_for_target,
    exact_word_intrin_for_target,
)
from schedules.intrin.tmac import tmac_form_for_target
from schedules.tmac_compute import tmac_func

from .layer_sites import LayerSite
from .planned_rewriter import PlannedRewritePass, const, kernel_call

LOOKUPS = ("auto", "gather", "shuffle", "tmac")


def resolve_lookup(lookup: str) -> str:
    """``gather``, ``shuffle`` or ``tmac``; ``auto`` picks the fastest the current target has."""
    if lookup not in LOOKUPS:
        raise ValueError(f"exact lookup must be one of {LOOKUPS}, got {lookup!r}")
    if lookup != "auto":
        return lookup
    target = tvm.target.Target.current(allow_none=True)
    if target is None:
        return "gather"
    if tmac_form_for_target(target):
        return "tmac"
    return "shuffle" if exact_shuffle_intrin_for_target(target) else "gather"


def use_word_tables() -> bool:
    """Whether the current target permutes int16 words (AVX-512BW ``vpermw``: the faster form)."""
    target = tvm.target.Target.current(allow_none=True)
    return target is not None and exact_word_intrin_for_target(target) is not None


def _tmac_kernel(wq: np.ndarray, layer: ExactLayerPlan, input_shape, geometry):
    """``(PrimFunc, name, [packed weight constants])`` of the T-MAC form."""
    target = tvm.target.Target.current(allow_none=True)
    form = tmac_form_for_target(target) if target is not None else None
    if form is None:
        raise PlanError(f"exact plan layer {layer.name!r}: the T-MAC look-up needs an AVX2, "
                        f"AVX-512BW or NEON target, not {target}")
    lanes, word = form
    packed = pack_tmac(wq, layer.bits, lanes, word)
    func = tmac_func(input_shape, geometry, layer.bits, packed.padded_groups, wq.shape[1], lanes,
                     float(np.float32(layer.act_scale)), word=word)
    return func, "exact_tmac", [packed.nibbles]


def _shuffle_kernel(wq: np.ndarray, layer: ExactLayerPlan, input_shape, geometry):
    """``(PrimFunc, name, [packed weight constants])`` of the shuffle form."""
    packed = pack_exact_blocks(wq, layer.bits)
    chunks, per_chunk = chunk_layout(packed.max_groups)
    packed = packed.with_entries(chunks * per_chunk)
    word = use_word_tables()
    if word:
        packed.patterns = packed.patterns.astype(np.int16)
    func = exact_lut_shuffle_func(input_shape, geometry, layer.bits, packed.max_groups, wq.shape[1],
                                  float(np.float32(layer.act_scale)), word=word)
    return func, "exact_lut_shuffle", [packed.group_index, packed.patterns]


def _gather_kernel(wq: np.ndarray, layer: ExactLayerPlan, input_shape, geometry):
    """``(PrimFunc, name, [packed weight constants])`` of the gather form."""
    packed = pack_exact(wq, layer.bits)
    depth, cols = wq.shape
    act_scale = float(np.float32(layer.act_scale))
    if geometry is None:
        func = exact_lut_dense_func(input_shape[0], depth, layer.bits, packed.max_groups, cols, act_scale)
    else:
        func = exact_lut_conv2d_func(input_shape, geometry, layer.bits, packed.max_groups, cols, act_scale)
    return func, "exact_lut_dense", [packed.group_index, packed.patterns]


def emit_exact_layer(builder: relax.BlockBuilder, data: relax.Expr, site: LayerSite,
                     layer: ExactLayerPlan, input_shape, lookup: str) -> relax.Expr:
    """Emit the exact kernel on ``data`` (``[M, D]`` rows, or NCHW for a conv site);
    returns the ``[M, N]`` float32 call."""
    if layer.piece_bits != 1:
        raise PlanError(f"exact plan layer {layer.name!r}: field 'piece_bits' "
                        f"{layer.piece_bits}: only bit planes (1) are compiled")
    wq = layer.quantized_weight(site.weight)
    cols = wq.shape[1]
    geometry = site.geometry if site.kind is LayerKind.CONV2D else None
    form = "tmac" if layer.bits == 1 else resolve_lookup(lookup)  # only T-MAC runs {-1, +1}
    make_kernel = {"tmac": _tmac_kernel, "shuffle": _shuffle_kernel, "gather": _gather_kernel}[form]
    func, name, weights = make_kernel(wq, layer, input_shape, geometry)
    if geometry is None:
        rows = int(input_shape[0])
    else:
        batch, _, height, width = input_shape
        rows = batch * math.prod(geometry.output_hw(height, width))
    args = [data, *(const(w) for w in weights),
            const(output_scale(layer.act_scale, layer.w_scale)), const(np.zeros(cols, np.int32))]
    return kernel_call(builder, func, name, args, (rows, cols))


class ExactRewritePass(PlannedRewritePass):
    """A ``PlannedRewritePass`` over an ExactPlan with the look-up form ``lookup`` (see above)."""

    def __init__(self, plan: ExactPlan, lookup: str = "auto"):
        super().__init__(plan)
        self.lookup = lookup
