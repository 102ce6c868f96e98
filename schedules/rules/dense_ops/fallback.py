"""Catch-all CPU schedule for ANY PrimFunc: parallel outer spatial loops, vectorize if legal."""

from __future__ import annotations

import tvm_ffi

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import collect_vars_used_in_prim_expr
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from ._loops import attempt, get_realize, is_cpu_target, parallel_vectorize, root_blocks
from ._loops import vector_lanes, write_dtype_bits


def _loop_kinds(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, loops) -> str:
    """Per loop: "S" if it only feeds data-parallel block iters, else "X"."""
    stmt = sch.get(block)
    values = get_realize(sch, block).iter_values
    bad = set()
    for iv, value in zip(stmt.iter_vars, values):
        if iv.iter_type != tirx.IterVar.DataPar:
            bad |= collect_vars_used_in_prim_expr(value)
    return "".join("X" if sch.get(lp).loop_var in bad else "S" for lp in loops)


def _has_loop(stmt) -> bool:
    found = []
    tvm_ffi.structural_walk(stmt, (tirx.For, found.append), order="post")
    return bool(found)


class Fallback(ScheduleRule):
    """Never declines (on CPU): every top-level loop nest gets its leading data-parallel
    loops fused and parallelized and, if the whole nest is data-parallel, its innermost
    loop vectorized. Anything that fails is skipped, so the result is always valid."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool):
        if not isinstance(func, tirx.PrimFunc) or not is_cpu_target(target):
            return None
        try:
            sch = s_tir.Schedule(func)
        except Exception:  # pylint: disable=broad-except
            return None
        try:
            blocks = root_blocks(sch)
        except Exception:  # pylint: disable=broad-except
            return sch
        for block in blocks:
            attempt(sch, lambda s, b=block: self._schedule_block(s, b, target))
        return sch

    @staticmethod
    def _schedule_block(sch: s_tir.Schedule, block, target: Target) -> None:
        loops = sch.get_loops(block)
        if not loops:
            return
        if len(sch.get_child_blocks(loops[0])) > 1:  # imperfect nest: outermost loop only
            attempt(sch, lambda s: s.parallel(loops[0]))
            return
        kinds = _loop_kinds(sch, block, loops)
        n_s = len(kinds) - len(kinds.lstrip("S"))
        lanes = vector_lanes(target, write_dtype_bits(sch, block))
        leaf = not _has_loop(sch.get(block).body)
        parallel_vectorize(sch, loops[:n_s], lanes, vectorize=leaf and n_s == len(loops))
