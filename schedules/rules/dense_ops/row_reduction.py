"""Vectorized CPU schedule for row reductions (softmax + its mask epilogue, layer_norm, rms_norm)."""

from __future__ import annotations

import re

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import collect_vars_used_in_prim_expr
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from ._loops import MIN_PARALLEL_WORK, attempt, block_kinds, extent, get_realize, is_cpu_target
from ._loops import largest_divisor, parallel_vectorize, prod, root_blocks, vector_lanes
from ._loops import write_dtype_bits

# Reductions shorter than this stay scalar: the horizontal step would cost more than it saves.
MIN_RFACTOR_EXTENT = 16


def _leading_s(kinds: str) -> int:
    """Number of leading data-parallel iterations in a block_kinds string."""
    return len(kinds) - len(kinds.lstrip("S"))


def _inline_single_use(sch: s_tir.Schedule) -> None:
    """Inline every injective, non-output block read by exactly one other block (a value
    read by several blocks, e.g. softmax's exp, stays materialized at the row)."""
    changed = True
    while changed:
        changed = False
        for blk in root_blocks(sch)[:-1]:
            if "R" in block_kinds(sch, blk) or len(sch.get_consumers(blk)) != 1:
                continue
            if attempt(sch, lambda s, b=blk: s.compute_inline(b)):
                changed = True


def _rfactor_lanes(sch: s_tir.Schedule, block, n_row: int, lanes: int):
    """Split the (fused) reduction loop of ``block`` by a vector width and rfactor it: returns
    the rf block (vector partial sums, reduced over the outer loop) or None."""
    loops = sch.get_loops(block)
    red = loops[n_row:]
    if len(red) > 1:
        red = [sch.fuse(*red)]
    k = extent(sch, red[0])
    if k is None or k < MIN_RFACTOR_EXTENT:
        return None
    factor = largest_divisor(k, lanes, 4) if k % lanes else lanes
    if factor < 4:
        return None
    _, ki = sch.split(red[0], factors=[None, factor])
    return sch.rfactor(ki, factor_axis=n_row)


class RowReduction(ScheduleRule):
    """Blocks sharing leading spatial "row" axes: reductions over the rest of the row
    (``S..S R..R``) and injective blocks, the last injective (softmax, layer_norm, rms_norm,
    with epilogues such as an attention mask's ``where``).

    Loop nest: parallel(rows) -> for each block in order, at the row: reductions as
    vector partial sums (rfactor by the SIMD width; one horizontal step per row), injective
    blocks vectorized. Injective blocks read once are inlined; the rest (exp) are kept per
    row, in L1.
    """

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool):
        if not isinstance(func, tirx.PrimFunc) or not is_cpu_target(target):
            return None
        sch = s_tir.Schedule(func)
        blocks = root_blocks(sch)
        kinds = [block_kinds(sch, b) for b in blocks]
        if len(blocks) < 2 or any(sch.get_child_blocks(b) for b in blocks):
            return None
        if not all(re.fullmatch("S+R*", k) for k in kinds) or "R" in kinds[-1]:
            return None
        if not any("R" in k for k in kinds):
            return None
        _inline_single_use(sch)
        blocks = root_blocks(sch)
        kinds = [block_kinds(sch, b) for b in blocks]
        n_row = min(_leading_s(k) for k in kinds)
        if any("R" in k and _leading_s(k) != n_row for k in kinds):
            return None
        lanes = vector_lanes(target, write_dtype_bits(sch, blocks[-1]))
        rfactored = []
        for blk, kind in zip(blocks, kinds):
            if "R" in kind:
                rf = _rfactor_lanes(sch, blk, n_row, lanes)
                if rf is not None:
                    rfactored.append(rf)
        out = root_blocks(sch)[-1]
        loops = sch.get_loops(out)
        row_work = prod(extent(sch, lp) or MIN_PARALLEL_WORK for lp in loops)
        row = sch.fuse(*loops[:n_row]) if n_row > 1 else loops[0]
        parallel_vectorize(sch, sch.get_loops(out)[1:], lanes, work=1)
        if row_work >= MIN_PARALLEL_WORK:
            sch.parallel(row)
        for blk in reversed(root_blocks(sch)[:-1]):
            sch.compute_at(blk, row, preserve_unit_loops=True)
        for blk in sch.get_child_blocks(row)[:-1]:
            self._vectorize_at_row(sch, blk, rfactored, lanes)
        return sch

    @staticmethod
    def _vectorize_at_row(sch: s_tir.Schedule, block, rfactored: list, lanes: int) -> None:
        """Vectorize a block already at the row: rf blocks over their lanes, injective blocks
        over their innermost loop; the horizontal (write-back) reductions stay scalar."""
        inner = sch.get_loops(block)[1:]
        if any(sch.get(block).same_as(sch.get(rf)) for rf in rfactored):
            _vectorize_partial_sums(sch, block, inner)
        elif "R" not in block_kinds(sch, block):
            parallel_vectorize(sch, inner, lanes, work=1)


def _vectorize_partial_sums(sch: s_tir.Schedule, block, inner: list) -> None:
    """At the row, an rf block's loops are the vector lane loop (spatial) and the chunk loop
    (reduction), plus unit loops: put the lanes innermost, vectorize, then split off the init."""
    stmt, values = sch.get(block), get_realize(sch, block).iter_values
    reduce_vars = set()
    for ivar, value in zip(stmt.iter_vars, values):
        if ivar.iter_type != tirx.IterVar.DataPar:
            reduce_vars |= set(collect_vars_used_in_prim_expr(value))
    long_loops = [lp for lp in inner if (extent(sch, lp) or 2) > 1]
    chunk = [lp for lp in long_loops if sch.get(lp).loop_var in reduce_vars]
    lane = [lp for lp in long_loops if sch.get(lp).loop_var not in reduce_vars]
    if len(chunk) != 1 or len(lane) != 1:
        return
    sch.reorder(chunk[0], lane[0])
    sch.vectorize(lane[0])
    init = sch.decompose_reduction(block, chunk[0])
    attempt(sch, lambda s: s.vectorize(sch.get_loops(init)[-1]))
