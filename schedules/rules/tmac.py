"""Schedule of the exact T-MAC kernel (``schedules.tmac_compute``, kind ``exact_tmac``).

Loop nest of the look-up, outermost first: row blocks of ``rows_per_tile`` rows, column tiles of
``L`` (64 AVX-512BW, 32 AVX2, 16 NEON), chunks of groups, groups ``e``, planes ``j``, rows of
the block, then the ``L``-column look-up tensorized (``schedules.intrin.tmac``). Per group the
``b`` planes' nibble indices are extracted once and shared by the block's rows; the ``b x rows``
int16 accumulators of the tile stay in registers across the groups (``b * rows <= 8``); each
row's two byte tables are broadcast from L1. The tables of a row block are built under the block
(they stay in L1); with few rows (GEMV) they are built first and the column tiles run in
parallel instead. Shift-and-add and the float epilogue follow each tile, vectorized.

Knobs (``TmacKnobs``): rows per block and whether tables are built per block; under tuning the
rows per block are sampled from the divisors of ``M`` (MetaSchedule sees the decision).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule

from schedules.exact_lut_compute import QUANT_BLOCK
from schedules.attrs import WORD_ATTR
from schedules.intrin.tmac import TMAC_LANES, TMAC_PERMW_LANES, tmac_intrin_for_target
from schedules.tmac_compute import (
    ACC16_BLOCK,
    COMBINE_BLOCK,
    HI_BLOCK,
    LO_BLOCK,
    OUT_BLOCK,
    PAD_BLOCK,
    TABLE_BLOCK,
    TMAC_KIND,
)

from .lut_kind import has_block, lut_kind, vector_lanes

ACC_REGISTERS = 8  # planes x rows of int16 accumulators per tile kept in registers
FEW_ROWS = 8  # up to this many row blocks: build tables first, parallel over column tiles


@dataclass(frozen=True)
class TmacKnobs:
    """The schedule's choices for one kernel."""

    rows_per_tile: int
    tables_per_block: bool


def default_knobs(rows: int, bits: int) -> TmacKnobs:
    """The largest divisor of ``rows`` with ``bits * rows_per_tile <= ACC_REGISTERS``."""
    limit = max(1, ACC_REGISTERS // bits)
    per_tile = max(d for d in range(1, min(rows, limit) + 1) if rows % d == 0)
    return TmacKnobs(per_tile, rows // per_tile > FEW_ROWS)


class TmacRule(ScheduleRule):
    """Schedules ``exact_tmac`` PrimFuncs on targets with a T-MAC intrinsic; None otherwise."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        if lut_kind(func) != TMAC_KIND:
            return None
        word = bool(int(func.attrs.get(WORD_ATTR, 0)))
        intrin = tmac_intrin_for_target(target, word)
        if intrin is None:
            return None
        sch = s_tir.Schedule(func)
        acc = sch.get_sblock(ACC16_BLOCK)
        lanes = TMAC_PERMW_LANES if word else TMAC_LANES[intrin]
        _, bits, rows, _, block_lanes = (int(r.dom.extent) for r in sch.get(acc).iter_vars[:5])
        if block_lanes != lanes:
            return None  # packed for the other width
        knobs = default_knobs(rows, bits)
        if tunable:  # rows per block among the divisors of M that keep the accumulators near registers
            choices = [d for d in range(1, rows + 1) if rows % d == 0 and d * bits <= 2 * ACC_REGISTERS]
            if len(choices) > 1:
                per_tile = sch.sample_categorical(choices, [1.0 / len(choices)] * len(choices),
                                                  choices.index(knobs.rows_per_tile))
                knobs = TmacKnobs(per_tile, knobs.tables_per_block)
        schedule_tmac(sch, target, intrin, knobs)
        return sch


def schedule_tmac(sch: s_tir.Schedule, target, intrin: str, knobs: TmacKnobs) -> s_tir.Schedule:
    """Apply the loop nest of the module docstring to ``sch`` (the ``exact_tmac`` PrimFunc)."""
    float_lanes = vector_lanes(target, 32)
    acc = sch.get_sblock(ACC16_BLOCK)
    chunk, plane, row, tile, lane, entry, pattern = sch.get_loops(acc)
    row_block, row_in = sch.split(row, [None, knobs.rows_per_tile])
    sch.reorder(row_block, tile, chunk, entry, plane, row_in, lane, pattern)
    for name in (COMBINE_BLOCK, OUT_BLOCK):
        sch.reverse_compute_at(sch.get_sblock(name), tile, preserve_unit_loops=True)
    anchor = row_block if knobs.tables_per_block else None
    tables = (TABLE_BLOCK, PAD_BLOCK) if not has_block(sch, LO_BLOCK) else \
        (LO_BLOCK, HI_BLOCK, TABLE_BLOCK, PAD_BLOCK)
    sch.compute_inline(sch.get_sblock(QUANT_BLOCK))  # quantized as the padded rows are widened
    for name in tables:
        block = sch.get_sblock(name)
        if anchor is not None:
            sch.compute_at(block, anchor, preserve_unit_loops=True)
        inner = sch.get_loops(block)[-1]
        extent = sch.get(inner).extent
        if name == PAD_BLOCK:
            inner = sch.split(inner, [None, float_lanes])[1]
        elif int(extent) > 16:
            inner = sch.split(inner, [None, 16])[1]
        sch.vectorize(inner)
    if anchor is None:
        for name in tables:
            block = sch.get_sblock(name)
            sch.parallel(sch.get_loops(block)[0])
    sch.parallel(tile if anchor is None else row_block)
    _schedule_epilogue(sch, float_lanes)
    init = sch.decompose_reduction(acc, entry)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(lane, intrin)
    sch.unroll(row_in)
    sch.unroll(plane)
    return sch


def _schedule_epilogue(sch: s_tir.Schedule, float_lanes: int) -> None:
    combine = sch.get_sblock(COMBINE_BLOCK)
    row, col, chunk, plane = sch.get_loops(combine)[-4:]
    col_outer, col_inner = sch.split(col, [None, float_lanes])
    sch.reorder(row, col_outer, chunk, plane, col_inner)
    sch.vectorize(col_inner)
    sch.unroll(plane)
    init = sch.decompose_reduction(combine, chunk)
    sch.vectorize(sch.get_loops(init)[-1])
    out = sch.get_sblock(OUT_BLOCK)
    sch.vectorize(sch.split(sch.get_loops(out)[-1], [None, float_lanes])[1])
