"""CPU schedule for purely injective PrimFuncs (elementwise, broadcast, reshape, transpose)."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from ._loops import is_cpu_target, parallel_vectorize, try_inline_all, vector_lanes
from ._loops import write_dtype_bits


class Injective(ScheduleRule):
    """Inline every intermediate block into the outputs, then for each output block
    fuse+parallelize the outer loops and vectorize the innermost one."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool):
        if not isinstance(func, tirx.PrimFunc) or not is_cpu_target(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos or not all(info.is_injective() for info in infos):
            return None
        remaining = try_inline_all(sch, [info.block_rv for info in infos])
        for block in remaining:
            lanes = vector_lanes(target, write_dtype_bits(sch, block))
            parallel_vectorize(sch, sch.get_loops(block), lanes)
        return sch
