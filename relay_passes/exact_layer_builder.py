"""What the two LUT-NA (exact) rewrite passes share: the look-up form and the exact kernel's call.

``ExactRewritePass`` is their pass body (a ``PlannedRewritePass`` with a ``lookup`` choice);
``emit_exact_layer`` emits one ``call_tir`` that quantizes the input (int8, the plan's
``act_scale``), computes ``xq @ Wq`` exactly by bit-plane table look-ups over the nonzero groups
and dequantizes it (``float32(acc) * act_scale * w_scale[n]``) to ``[M, N]``; ``Wq`` is the plan's
quantization of the bound weight, and the int32 bias is zero (``FuseExactBias`` fills it).

The look-up form is ``lookup``: ``"gather"`` (``schedules.exact_lut_compute``, per-column skip
lists), ``"shuffle"`` (``schedules.exact_shuffle_compute``, byte shuffles over blocks of 64
columns) or ``"auto"`` (the default): the shuffle form for a current target with a byte shuffle
(AVX2, AVX-512BW, NEON), measured 7-14x faster there (128 x 384 x 384, b = 4 and 8, one
thread), and the gather form otherwise (the shuffle form without a shuffle is scalar, 10x slower).
On AVX-512BW the shuffle form uses whole int16 tables and int16 patterns (``vpermw``, 32 look-ups
per instruction, no byte split), another 1.4-1.6x faster than the byte shuffles.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax

from lut_tvm.errors import PlanError
from lut_tvm.exact.plan import ExactLayerPlan, ExactPlan
from lut_tvm.exact.reference import output_scale, pack_exact, pack_exact_blocks
from lut_tvm.weights import LayerKind
from schedules.exact_lut_compute import exact_lut_conv2d_func, exact_lut_dense_func
from schedules.exact_shuffle_compute import chunk_layout, exact_lut_shuffle_func
from schedules.intrin.exact_shuffle import (
    exact_shuffle_intrin_for_target,
    exact_word_intrin_for_target,
)

from .layer_sites import LayerSite
from .planned_rewriter import PlannedRewritePass, const, kernel_call

LOOKUPS = ("auto", "gather", "shuffle")


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


def _shuffle_kernel(wq: np.ndarray, layer: ExactLayerPlan, input_shape, geometry):
    """``(PrimFunc, name, packed weight)`` of the shuffle form."""
    packed = pack_exact_blocks(wq, layer.bits)
    chunks, per_chunk = chunk_layout(packed.max_groups)
    packed = packed.with_entries(chunks * per_chunk)
    word = use_word_tables()
    if word:
        packed.patterns = packed.patterns.astype(np.int16)
    func = exact_lut_shuffle_func(input_shape, geometry, layer.bits, packed.max_groups, wq.shape[1],
                                  float(np.float32(layer.act_scale)), word=word)
    return func, "exact_lut_shuffle", packed


def _gather_kernel(wq: np.ndarray, layer: ExactLayerPlan, input_shape, geometry):
    """``(PrimFunc, name, packed weight)`` of the gather form."""
    packed = pack_exact(wq, layer.bits)
    depth, cols = wq.shape
    act_scale = float(np.float32(layer.act_scale))
    if geometry is None:
        func = exact_lut_dense_func(input_shape[0], depth, layer.bits, packed.max_groups, cols, act_scale)
    else:
        func = exact_lut_conv2d_func(input_shape, geometry, layer.bits, packed.max_groups, cols, act_scale)
    return func, "exact_lut_dense", packed


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
    make_kernel = _shuffle_kernel if resolve_lookup(lookup) == "shuffle" else _gather_kernel
    func, name, packed = make_kernel(wq, layer, input_shape, geometry)
    if geometry is None:
        rows = int(input_shape[0])
    else:
        batch, _, height, width = input_shape
        rows = batch * math.prod(geometry.output_hw(height, width))
    args = [data, const(packed.group_index), const(packed.patterns),
            const(output_scale(layer.act_scale, layer.w_scale)), const(np.zeros(cols, np.int32))]
    return kernel_call(builder, func, name, args, (rows, cols))


class ExactRewritePass(PlannedRewritePass):
    """A ``PlannedRewritePass`` over an ExactPlan with the look-up form ``lookup`` (see above)."""

    def __init__(self, plan: ExactPlan, lookup: str = "auto"):
        super().__init__(plan)
        self.lookup = lookup
