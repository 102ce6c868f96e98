"""Default schedule of LUT-NA's exact dense kernel (``schedules.exact_lut_compute``).

Rows run in parallel, in two stages. First, for each row ``m``: quantize the row (float
variant) and build its ``Gc x 16`` int16 activation tables (16 lanes, one vector per group).
Then, for each row and bit plane,
walk the columns ``L`` at a time (``L`` int32 lanes of the target) and the nonzero-group list
``e``, gathering ``T[m, gidx[e, n], pat[j, e, n]]`` into an int32 vector accumulator; finally
the shift-and-add over the planes (and the float epilogue) runs vectorized over the columns.

The look-up here is a gather; the byte-shuffle form (16-entry int16 table split into low/high
byte tables, ``vpshufb``/``tbl`` over the patterns of 16-64 columns) is not tensorized yet.
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

from .lut_kind import lut_kind, vector_lanes


class ExactLutRule(ScheduleRule):
    """Schedules ``exact_lut_dense`` PrimFuncs; None for any other function."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        if lut_kind(func) != EXACT_LUT_DENSE:
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


def _split_inner(sch: s_tir.Schedule, loop, lanes: int):
    return sch.split(loop, [None, lanes])[1]


def _has_block(sch: s_tir.Schedule, name: str) -> bool:
    try:
        sch.get_sblock(name)
    except Exception:  # pylint: disable=broad-except
        return False
    return True
