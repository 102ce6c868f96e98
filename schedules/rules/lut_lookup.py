"""Default schedule of the lookup/accumulate kernels: table rows gathered by code, vectorized.

For each output row (or pixel) and codebook, the table row ``T[c, code, n0:n0+L]`` is added
into an int32 accumulator vector of ``L`` lanes; rows run in parallel, and the scale/bias/ReLU
epilogue is applied right after each row's accumulation.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule

from schedules.attrs import LutKind

from .lut_kind import has_block, lut_kind, vector_lanes


class LutLookupRule(ScheduleRule):
    """Schedules ``lookup_dense`` / ``lookup_conv2d`` PrimFuncs; None for anything else."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        kind = lut_kind(func)
        if kind not in (LutKind.LOOKUP_DENSE, LutKind.LOOKUP_CONV2D):
            return None
        sch = s_tir.Schedule(func)
        acc = sch.get_sblock("lookup_acc")
        lanes = vector_lanes(target, 32)
        if kind == LutKind.LOOKUP_DENSE:
            row, col, codebook = sch.get_loops(acc)
            col_out, col_in = sch.split(col, [None, lanes])
            sch.reorder(row, col_out, codebook, col_in)
            outer = sch.fuse(row, col_out)
        else:
            batch, chan, out_y, out_x, codebook = sch.get_loops(acc)
            chan_out, chan_in = sch.split(chan, [None, lanes])
            sch.reorder(batch, out_y, out_x, chan_out, codebook, chan_in)
            outer = sch.fuse(batch, out_y)
        sch.parallel(outer)
        sch.vectorize(sch.get_loops(acc)[-1])
        init = sch.decompose_reduction(acc, codebook)
        if has_block(sch, "lookup_out"):
            out = sch.get_sblock("lookup_out")
            sch.reverse_compute_at(out, sch.get_loops(init)[-2])
            sch.vectorize(sch.get_loops(out)[-1])
        return sch

