"""Schedule of the int8 row encode (``encode_dense_rows_int8``): rows in the 32-bit lanes, integer dots.

Tiles of one codebook ``c`` x ``L`` rows run in parallel (``L`` = the dot instruction's lanes:
16 with AVX-512 VNNI / BW, 8 with AVX2 and on other targets, ``schedules.intrin.int8_dot.
encode_dot_for_target``). Inside a tile:

1. the tile's input is quantized into a ``[G, L, 4]`` int8 buffer (``G L 4`` bytes, on the stack),
   each row's 4 consecutive depths one 32-bit lane;
2. for each centroid ``k`` (unrolled, ``J`` chains interleaved as in the float row encode,
   ``schedules.rules.lut_encode_rows``): one int32 accumulator register of ``L`` rows, ``G`` dot
   steps, each the intrinsic on the broadcast 4 bytes ``pu[c, k, 4g:4g+4]`` and the ``[L, 4]``
   input block: ``vpdpbusd`` (VNNI) or ``vpmaddubsw`` + ``vpmaddwd`` by ones + ``vpaddd``
   (exact for the encode's bounded operands), plain vectorized loops without either;
3. ``nq[c, k] - 2 acc`` updates chain ``j``'s running argmin (int32 compare / select / min), the
   chains are merged in order and the ``L`` codes stored into ``codes[c, m0:m0+L]``.
"""

from __future__ import annotations

from types import SimpleNamespace

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule

from lut_tvm.int8_encode_reference import GROUP
from schedules.intrin.int8_dot import encode_dot_for_target
from schedules.intrin.registry import ensure
from schedules.lut_encode_rows_compute import ARGMIN_BLOCK, CODES_BLOCK, DOT_BLOCK, PARTIAL_BLOCK
from schedules.lut_encode_rows_int8_compute import ENCODE_DENSE_ROWS_INT8, XQ_BLOCK

from .lut_encode_rows import MAX_UNROLL_CENTROIDS, _extents, _loops_by_extent, _present, _schedule_codes
from .lut_kind import lut_kind


def _schedule_tile(sch: s_tir.Schedule, tile, lanes: int, groups: int, intrin: str | None):
    """Chains, products and the input block under ``tile``; returns the loops to annotate."""
    partial, dot, xq = (sch.get_sblock(n) for n in (PARTIAL_BLOCK, DOT_BLOCK, XQ_BLOCK))
    sch.compute_at(partial, tile)
    _, num_chains, _, per_chain = _extents(sch, partial)
    p_chain, p_m, p_k = _loops_by_extent(sch, partial, (num_chains, lanes, per_chain))
    k_out = k_in = None
    if p_k is not None:
        k_out, k_in = sch.split(p_k, [None, min(per_chain, MAX_UNROLL_CENTROIDS)])
    sch.reorder(*_present(k_out, k_in, p_chain, p_m))
    sch.compute_at(dot, (_present(k_out, k_in, p_chain) or [tile])[-1])
    d_m, d_g, d_r = _loops_by_extent(sch, dot, (lanes, groups, GROUP))
    sch.reorder(*_present(d_g, d_m, d_r))
    sch.compute_at(xq, tile)
    x_r = sch.get_loops(xq)[-1]
    sch.vectorize(x_r)
    return k_out, k_in, p_chain, p_m, d_m, d_g, d_r


def _annotate(sch: s_tir.Schedule, loops: tuple, m_in, j, intrin: str | None) -> None:
    """Vectorize / unroll, split the reductions' inits off, tensorize the dot (or vectorize it)."""
    k_out, k_in, p_chain, p_m, d_m, d_g, d_r = loops
    dot, partial, argmin = (sch.get_sblock(n) for n in (DOT_BLOCK, PARTIAL_BLOCK, ARGMIN_BLOCK))
    sch.vectorize(p_m)
    for loop in _present(k_in, p_chain):
        sch.unroll(loop)
    sch.vectorize(m_in)
    sch.unroll(j)
    if d_g is not None:
        sch.unroll(d_g)
    if intrin is None:  # plain loops: lanes innermost (vectorize needs the block whole)
        sch.reorder(d_r, d_m)
        sch.unroll(d_r)
        sch.vectorize(d_m)
    dot_init = sch.decompose_reduction(dot, _present(d_g, d_r if intrin is None else d_m)[0])
    sch.vectorize(sch.get_loops(dot_init)[-1])
    if intrin is not None:
        sch.tensorize(d_m, ensure(intrin))
    p_init = sch.decompose_reduction(partial, _present(k_out, p_chain, p_m)[0])
    *init_chain, init_m = sch.get_loops(p_init)[-1 - (p_chain is not None):]
    sch.vectorize(init_m)
    for loop in init_chain:
        sch.unroll(loop)
    sch.vectorize(sch.get_loops(sch.decompose_reduction(argmin, j))[-1])


class LutEncodeRowsInt8Rule(ScheduleRule):
    """Schedules ``encode_dense_rows_int8`` PrimFuncs; None for anything else."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        if lut_kind(func) != ENCODE_DENSE_ROWS_INT8:
            return None
        sch = s_tir.Schedule(func)
        layout = encode_dot_for_target(target)
        lanes = layout.lanes
        xq_shape = sch.get(sch.get_sblock(XQ_BLOCK)).writes[0].source.shape
        groups, rows_pad = int(xq_shape[1]), int(xq_shape[2])
        codes = sch.get_sblock(CODES_BLOCK)
        rows = int(sch.get(codes).writes[0].source.shape[1])
        c, m, j = sch.get_loops(sch.get_sblock(ARGMIN_BLOCK))
        m_out, m_in = sch.split(m, [None, lanes])
        sch.reorder(c, m_out, j, m_in)
        tile = sch.fuse(c, m_out)
        sch.parallel(tile)
        loops = _schedule_tile(sch, tile, lanes, groups, layout.intrin)
        _annotate(sch, loops, m_in, j, layout.intrin)
        _schedule_codes(sch, SimpleNamespace(codes=codes, rows=rows, rows_pad=rows_pad, lanes=lanes), tile)
        return sch
