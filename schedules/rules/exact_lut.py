"""Default schedule of LUT-NA's exact dense kernel (``schedules.exact_lut_compute``).

Rows run in parallel, in two stages. First, for each row ``m``: quantize the row (float
variant) and build its ``Gc x 16`` int16 activation tables (16 lanes, one vector per group).
Then, for each row and bit plane,
walk the columns ``L`` at a time (``L`` int32 lanes of the target) and the nonzero-group list
``e``, gathering ``T[m, gidx[e, n], pat[j, e, n]]`` into an int32 vector accumulator; finally
the shift-and-add over the planes (and the float epilogue) runs vectorized over the columns.

The byte-shuffle form (``schedules.exact_shuffle_compute``, kind ``exact_lut_shuffle``) is
scheduled by ``_schedule_shuffle``: rows in parallel; per row, the list entries' tables copied
into low/high byte tables, then for each column block of ``L`` (64 AVX-512BW, 32 AVX2, 16 NEON)
and list entry, the ``b`` planes' look-ups tensorized into two byte shuffles each
(``schedules.intrin.exact_shuffle``) with the int16 accumulators in registers (the word form,
``lut_tvm.word = 1``: whole int16 tables, one ``vpermw`` per 32 look-ups); then the
shift-and-add and the float epilogue, vectorized over the columns. A target without a known
shuffle gets the same loops with a scalar look-up. Both forms accept dense rows and conv2d
windows (``lut_tvm.input``): only the quantize stage differs.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule

from schedules.exact_lut_compute import (
    ACC_BLOCK,
    COMBINE_BLOCK,
    EXACT_LUT_DENSE,
    OUT_BLOCK,
    QUANT_BLOCK,
    TABLE_BLOCK,
)
from schedules.exact_shuffle_compute import (
    ACC16_BLOCK,
    EXACT_LUT_SHUFFLE,
    TABLE_HI_BLOCK,
    TABLE_LO_BLOCK,
    TABLE_SEL_BLOCK,
)
from schedules.intrin.exact_shuffle import (
    EXACT_PERMW_LANES,
    EXACT_SHUFFLE_LANES,
    exact_shuffle_intrin_for_target,
    exact_word_intrin_for_target,
)

from schedules.attrs import WORD_ATTR

from .lut_kind import lut_kind, vector_lanes


class ExactLutRule(ScheduleRule):
    """Schedules ``exact_lut_dense`` (gather) and ``exact_lut_shuffle`` PrimFuncs; None otherwise."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        kind = lut_kind(func)
        if kind == EXACT_LUT_SHUFFLE:
            return _schedule_shuffle(s_tir.Schedule(func), target)
        if kind != EXACT_LUT_DENSE:
            return None
        sch = s_tir.Schedule(func)
        lanes = vector_lanes(target, 32)
        if _has_block(sch, OUT_BLOCK):
            sch.compute_inline(sch.get_sblock(COMBINE_BLOCK))
            final = sch.get_sblock(OUT_BLOCK)
        else:
            final = sch.get_sblock(COMBINE_BLOCK)
        row, col = sch.get_loops(final)
        sch.parallel(row)

        acc = sch.get_sblock(ACC_BLOCK)
        # Unit loops are kept so that the loop nest has the same shape for every extent.
        sch.compute_at(acc, row, preserve_unit_loops=True)
        # The look-up's table index is data dependent (a gather), so the tables cannot be
        # computed under the row loop by region inference: they are built first, in parallel
        # over rows, with the row's quantization computed under the same loop.
        table = sch.get_sblock(TABLE_BLOCK)
        table_row = sch.get_loops(table)[0]
        sch.parallel(table_row)
        sch.vectorize(sch.get_loops(table)[-1])
        if _has_block(sch, QUANT_BLOCK):
            quant = sch.get_sblock(QUANT_BLOCK)
            sch.compute_at(quant, table_row, preserve_unit_loops=False)
            sch.vectorize(_split_inner(sch, sch.get_loops(quant)[-1], lanes))

        plane, _, acc_col, group = sch.get_loops(acc)[-4:]
        col_out, col_in = sch.split(acc_col, [None, lanes])
        sch.reorder(plane, col_out, group, col_in)
        sch.vectorize(col_in)
        sch.decompose_reduction(acc, group)

        sch.vectorize(_split_inner(sch, col, lanes))
        return sch


def _schedule_shuffle(sch: s_tir.Schedule, target) -> s_tir.Schedule:
    word = bool(int(sch.mod["main"].attrs.get(WORD_ATTR, 0)))
    if word:
        intrin = exact_word_intrin_for_target(target)
        lanes, tables = EXACT_PERMW_LANES, (TABLE_SEL_BLOCK,)
    else:
        intrin = exact_shuffle_intrin_for_target(target)
        lanes = EXACT_SHUFFLE_LANES[intrin] if intrin else 16
        tables = (TABLE_LO_BLOCK, TABLE_HI_BLOCK)
    float_lanes = vector_lanes(target, 32)
    acc = sch.get_sblock(ACC16_BLOCK)
    chunk, plane, row, col, entry, pattern = sch.get_loops(acc)
    col_block, col_lane = sch.split(col, [None, lanes])
    sch.reorder(row, chunk, col_block, entry, plane, col_lane, pattern)
    # The row loop of the look-up is the anchor: the byte tables of the row's list entries go
    # under it (their source table is indexed by data, so it is built first, over all rows).
    for name in tables:
        block = sch.get_sblock(name)
        sch.compute_at(block, row, preserve_unit_loops=True)
        sch.vectorize(sch.get_loops(block)[-1])
    table = sch.get_sblock(TABLE_BLOCK)
    table_row = sch.get_loops(table)[0]
    sch.vectorize(sch.get_loops(table)[-1])
    quant = sch.get_sblock(QUANT_BLOCK)
    sch.compute_at(quant, table_row)
    sch.vectorize(_split_inner(sch, sch.get_loops(quant)[-1], float_lanes))
    sch.parallel(table_row)
    # Shift-and-add and the epilogue after the row's look-ups (unit loops kept: a single
    # chunk would otherwise lose its loop and change the nest).
    combine = sch.get_sblock(COMBINE_BLOCK)
    sch.reverse_compute_at(combine, row, preserve_unit_loops=True)
    out = sch.get_sblock(OUT_BLOCK)
    sch.reverse_compute_at(out, row)
    sch.vectorize(_split_inner(sch, sch.get_loops(out)[-1], float_lanes))
    out_col, out_chunk, out_plane = sch.get_loops(combine)[-3:]
    col_outer, col_inner = sch.split(out_col, [None, float_lanes])
    sch.reorder(col_outer, out_chunk, out_plane, col_inner)
    sch.vectorize(col_inner)
    sch.unroll(out_plane)  # constant plane coefficients
    sch.parallel(row)
    # Decompose and tensorize last: loops above a tensorized block cannot be transformed.
    init = sch.decompose_reduction(combine, out_chunk)
    sch.vectorize(sch.get_loops(init)[-1])
    init = sch.decompose_reduction(acc, entry)
    sch.vectorize(sch.get_loops(init)[-1])
    if intrin:
        sch.tensorize(col_lane, intrin)
    sch.unroll(plane)
    return sch


def _split_inner(sch: s_tir.Schedule, loop, lanes: int):
    return sch.split(loop, [None, lanes])[1]


def _has_block(sch: s_tir.Schedule, name: str) -> bool:
    try:
        sch.get_sblock(name)
    except Exception:  # pylint: disable=broad-except
        return False
    return True
