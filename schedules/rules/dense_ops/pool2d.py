"""CPU schedule for 2-D pooling (max, sum/avg) in NCHW: the zero/-inf padding materialized once, then
vector rows of outputs with the window loops outside them."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from ._loops import MAX_VECTOR_EXTENT, MIN_PARALLEL_WORK, attempt, extent, is_cpu_target, largest_divisor
from ._loops import parallel_vectorize, prod, vector_lanes, write_dtype_bits
from ._tiling import split_main_block


def _keep_padding(kept: list):
    """A ``split_main_block`` keep-callback claiming the producer of the pooled buffer (the pad block)."""

    def keep(sch: s_tir.Schedule, main, producer) -> bool:
        reads = [r.source for r in sch.get(main).reads]
        if any(w.source.same_as(buf) for w in sch.get(producer).writes for buf in reads):
            kept.append(producer)
            return True
        return False

    return keep


def _unit_stride(sch: s_tir.Schedule, block) -> bool:
    """True when the window's column index is ``x + rx`` (stride 1) in the first read: strided pools (a
    gather per vector lane) measured no faster, or much slower (64 x 112 x 112, 3x3 stride 2: 0.21 ->
    5.3 ms), and stay with the Reduction rule."""
    index = sch.get(block).reads[0].region[-1].min
    return isinstance(index, tirx.Add) and all(isinstance(v, tirx.Var) for v in (index.a, index.b))


def schedule_window(sch: s_tir.Schedule, info, epilogue: list, kept: list, target: Target) -> s_tir.Schedule:
    """Parallel (batch, channel, row) -> column blocks -> window loops -> a vector of output columns,
    the kept pad blocks parallel and vectorized on their own, the epilogue at each column block."""
    block = info.block_rv
    lanes = vector_lanes(target, write_dtype_bits(sch, block))
    n, c, y, x, *window = sch.get_loops(block)
    width = extent(sch, x)
    factor = width if width <= MAX_VECTOR_EXTENT else (largest_divisor(width, MAX_VECTOR_EXTENT, lanes)
                                                        or largest_divisor(width, MAX_VECTOR_EXTENT))
    xo, xi = sch.split(x, factors=[None, factor])
    sch.reorder(n, c, y, xo, *window, xi)
    outer = sch.fuse(n, c, y)
    work = prod(info.dom())
    for pad in kept:
        parallel_vectorize(sch, sch.get_loops(pad), lanes, work=work)
    for epi in epilogue:
        attempt(sch, lambda s, e=epi: s.reverse_compute_at(e, xo))
    if work >= MIN_PARALLEL_WORK and extent(sch, outer) > 1:
        sch.parallel(outer)
    sch.vectorize(xi)  # while the block is still a reduction block, as parallel also needs
    init = sch.decompose_reduction(block, window[0])
    attempt(sch, lambda s: s.vectorize(s.get_loops(init)[-1]))
    for epi in epilogue:
        attempt(sch, lambda s, e=epi: s.vectorize(s.get_loops(e)[-1]))
    return sch


class Pool2d(ScheduleRule):
    """A stride-1 ``S S S S R R`` reduction (batch, channel, row, column; window rows and columns)
    reading one padded buffer: the padding runs as its own parallel, vectorized loop nest (inlined, it puts a
    bounds test on every window element); the pool is parallel over (batch, channel, row) with the
    window loops outside a vector of output columns, and its epilogue (an average's division) fused
    at the end of each row."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool):
        if not isinstance(func, tirx.PrimFunc) or not is_cpu_target(target):
            return None
        sch = s_tir.Schedule(func)
        kept: list = []
        split = split_main_block(sch, "SSSSRR", keep=_keep_padding(kept))
        if split is None or len(sch.get(split[0].block_rv).reads) != 1 or not _unit_stride(sch, split[0].block_rv):
            return None
        return schedule_window(sch, *split, kept, target)
