"""CPU schedule for reductions: softmax, layer_norm, mean/sum, max/avg pool, generic S..SR..R."""

from __future__ import annotations

import re

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.s_tir.dlight.cpu import Reduction as DlightCPUReduction
from tvm.target import Target

from ._loops import MAX_VECTOR_EXTENT, MIN_PARALLEL_WORK, attempt, extent, is_cpu_target
from ._loops import largest_divisor, parallel_vectorize
from ._loops import prod, vector_lanes, write_dtype_bits
from ._tiling import split_main_block
from .row_reduction import RowReduction

# Keep reduction loops inside the innermost spatial loop when that spatial loop is
# shorter than this (vectorizing it would buy little).
MIN_VECTOR_SPATIAL = 4


class Reduction(ScheduleRule):
    """Three strategies, first match wins:

    1. A single reduction block ``S..S R..R`` (+ injective prologue / epilogue: max/avg pool,
       mean, sum, matmuls the Matmul rule rejects): parallelize the outer spatial loops, move
       the reduction loops outside the innermost spatial loop and vectorize that loop.
    2. ``RowReduction`` for multi-reduction row reductions whose last block is injective
       (softmax, layer_norm): parallel rows, vector partial sums, everything at the row.
    3. dlight's ``cpu.Reduction`` for the row reductions RowReduction declines (and for all of
       them with ``vector_rows=False``, the previous default, kept for benchmarks).
    """

    def __init__(self, vector_rows: bool = True):
        self._rows = RowReduction() if vector_rows else None
        self._dlight = DlightCPUReduction()

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or not is_cpu_target(target):
            return None
        sch = self._single_reduction(func, target)
        if sch is not None:
            return sch
        try:
            sch = self._rows.apply(func, target, tunable) if self._rows else None
        except Exception:  # pylint: disable=broad-except
            sch = None  # a schedule step RowReduction could not take: use dlight's rule
        return sch if sch is not None else self._dlight.apply(func, target, tunable)

    @staticmethod
    def _single_reduction(func: tirx.PrimFunc, target: Target):
        sch = s_tir.Schedule(func)
        split = split_main_block(sch)
        if split is None:
            return None
        info, epilogue = split
        kinds = info.dom_kind()
        if not re.fullmatch("S+R+", kinds):
            return None
        block = info.block_rv
        n_s = len(kinds) - len(kinds.lstrip("S"))
        loops = sch.get_loops(block)
        spatial, reduce = loops[:n_s], loops[n_s:]
        work = prod(info.dom())
        lanes = vector_lanes(target, write_dtype_bits(sch, block))
        last = extent(sch, spatial[-1]) or 0
        factor = last
        if last > MAX_VECTOR_EXTENT:
            factor = largest_divisor(last, MAX_VECTOR_EXTENT, lanes)
        outer = spatial
        if factor >= MIN_VECTOR_SPATIAL and (n_s >= 2 or factor < last):
            if factor < last:
                so, si = sch.split(spatial[-1], factors=[None, factor])
                outer = spatial[:-1] + [so]
            else:
                si, outer = spatial[-1], spatial[:-1]
            sch.reorder(*reduce, si)
            sch.decompose_reduction(block, reduce[0])
            attempt(sch, lambda s: s.vectorize(si))
        if work >= MIN_PARALLEL_WORK:
            fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
            attempt(sch, lambda s: s.parallel(fused))
        for epi in epilogue:
            parallel_vectorize(sch, sch.get_loops(epi), lanes)
        return sch
