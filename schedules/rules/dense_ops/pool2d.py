"""CPU schedule for 2-D pooling (max, sum/avg) in NCHW: the zero/-inf padding materialized once, then
vector rows of outputs with the window loops outside them."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.tirx import IndexMap
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


def column_stride(sch: s_tir.Schedule, block) -> int | None:
    """The window's column stride: 1 when the first read's column index is ``x + rx`` (output column,
    window column), s when it is ``x * s + rx``, None otherwise (dilated, or not a window)."""
    stmt = sch.get(block)
    x, rx = stmt.iter_vars[3].var, stmt.iter_vars[-1].var
    index = stmt.reads[0].region[-1].min
    if not isinstance(index, tirx.Add) or not index.b.same_as(rx):
        return None
    if index.a.same_as(x):
        return 1
    mul = index.a
    if isinstance(mul, tirx.Mul) and mul.a.same_as(x) and isinstance(mul.b, tirx.IntImm):
        return int(mul.b)
    return None


def deinterleave_columns(sch: s_tir.Schedule, block, kept: list, stride: int) -> list:
    """Store the window's input as ``[.., stride, W / stride]`` (column w at ``[w % s, w // s]``: the
    kept pad block's output, else a copy of the input made here), so that each window tap of a
    strided window reads consecutive columns: a vector of outputs then loads a vector, where the
    strided read was a gather per lane (64 x 112 x 112, 3x3 stride 2: 0.21 -> 5.3 ms vectorized as
    a gather). Returns the blocks to run before the window (``kept`` or the copy)."""
    if not kept:
        kept = [sch.cache_read(block, 0, "global")]
    if len(kept) != 1:
        raise ValueError(f"no column de-interleave for {len(kept)} producers of the window's input")
    index_map = IndexMap.from_func(lambda *idx: (*idx[:-1], idx[-1] % stride, idx[-1] // stride),
                                   ndim=len(sch.get(kept[0]).writes[0].source.shape))
    # a width not a multiple of the stride: the last column group padded (never read by the window)
    sch.transform_layout(kept[0], ("write", 0), index_map, pad_value=0.0)
    if len(sch.get(kept[0]).iter_vars) == len(index_map.initial_indices):  # (padded: already iterates the new layout)
        sch.transform_block_layout(kept[0], index_map)  # write it in that order: vectors of consecutive q
    return kept


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
    unroll = []
    if factor > lanes and factor % lanes == 0:  # one register per vector (a 56-wide LLVM vector: slow on AVX2)
        xv, xi = sch.split(xi, factors=[None, lanes])
        unroll = [xv]
    sch.reorder(n, c, y, xo, *window, *unroll, xi)
    outer = sch.fuse(n, c, y)
    work = prod(info.dom())
    for pad in kept:
        parallel_vectorize(sch, sch.get_loops(pad), lanes, work=work)
    for epi in epilogue:
        attempt(sch, lambda s, e=epi: s.reverse_compute_at(e, xo))
    if work >= MIN_PARALLEL_WORK and extent(sch, outer) > 1:
        sch.parallel(outer)
    for loop in unroll:
        sch.unroll(loop)
    sch.vectorize(xi)  # while the block is still a reduction block, as parallel also needs
    init = sch.decompose_reduction(block, window[0])
    attempt(sch, lambda s: s.vectorize(s.get_loops(init)[-1]))
    for epi in epilogue:
        attempt(sch, lambda s, e=epi: s.vectorize(s.get_loops(e)[-1]))
    return sch


class Pool2d(ScheduleRule):
    """An ``S S S S R R`` reduction (batch, channel, row, column; window rows and columns)
    reading one padded buffer: the padding runs as its own parallel, vectorized loop nest (inlined, it puts a
    bounds test on every window element); the pool is parallel over (batch, channel, row) with the
    window loops outside a vector of output columns, and its epilogue (an average's division) fused
    at the end of each row. A strided window reads its input de-interleaved by column
    (``deinterleave_columns``)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool):
        if not isinstance(func, tirx.PrimFunc) or not is_cpu_target(target):
            return None
        sch = s_tir.Schedule(func)
        kept: list = []
        split = split_main_block(sch, "SSSSRR", keep=_keep_padding(kept))
        if split is None or len(sch.get(split[0].block_rv).reads) != 1:
            return None
        stride = column_stride(sch, split[0].block_rv)
        if stride is None:
            return None
        if stride > 1:
            kept = deinterleave_columns(sch, split[0].block_rv, kept, stride)
        return schedule_window(sch, *split, kept, target)
