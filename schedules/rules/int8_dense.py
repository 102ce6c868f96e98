"""Default schedules of the int8 dense layer's kernels (``schedules.int8_dense_compute``).

``int8_dense``: the int32 accumulator is tiled into ``row block x (col_vectors * L)`` tiles; the
tiles run in parallel (rows) and each accumulates in registers (a ``local`` buffer that LLVM
promotes) over the depth groups ``ko``, one dot-product instruction per (row, L columns, R
depths), tensorized with the target's intrinsic (``schedules.intrin.int8_dot``) for the kernel's
activation width (attribute ``act_bits``: ``vpmaddubsw`` only on 7-bit activations); the weight
layout ``[L, R]`` is read from the packed weight's shape, so it always matches what the
compiling pass packed. The dequantize runs under the tile, vectorized over its columns.

``int8_quantize_rows``: rows in parallel; per row the min / max reductions, its scale and zero
point, then the quantized row, vectorized.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule

from schedules.attrs import ACT_BITS_ATTR
from schedules.int8_dense_compute import (
    ACC_BLOCK,
    INT8_DENSE,
    INT8_QUANTIZE_ROWS,
    MAX_BLOCK,
    MIN_BLOCK,
    OUT_BLOCK,
    QUANT_BLOCK,
    ROW_BLOCK,
    SCALE_BLOCK,
    ZP_BLOCK,
)
from schedules.intrin.int8_dot import Int8Layout, int8_layout_for_target
from schedules.intrin.registry import ensure

from .lut_kind import lut_kind, vector_lanes

# Column vectors (of L int32 lanes) per tile, by L: ROW_BLOCK x that many accumulator registers
# (16 of AVX-512's 32 zmm; 8 of AVX2's 16 ymm: 4 x 4 spilled accumulators to the stack).
COL_VECTORS = {16: 4, 8: 2}


class Int8DenseRule(ScheduleRule):
    """Schedules ``int8_dense`` and ``int8_quantize_rows`` PrimFuncs; None otherwise."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        kind = lut_kind(func)
        if kind == INT8_QUANTIZE_ROWS:
            return _schedule_quantize(s_tir.Schedule(func), target)
        if kind != INT8_DENSE:
            return None
        act_bits = int(func.attrs[ACT_BITS_ATTR]) if ACT_BITS_ATTR in func.attrs else 8
        return _schedule_dense(s_tir.Schedule(func), target, act_bits)


def _divisor_up_to(extent: int, limit: int) -> int:
    return max(f for f in range(1, min(extent, limit) + 1) if extent % f == 0)


def _layout_of(sch: s_tir.Schedule, target, act_bits: int) -> Int8Layout:
    """The packed weight's ``[L, R]`` and the target's intrinsic for it (None if it has none)."""
    wpack = next(read.source for read in sch.get(sch.get_sblock(ACC_BLOCK)).reads
                 if len(read.source.shape) == 4)
    lanes, group = (int(d) for d in wpack.shape[2:])
    layout = int8_layout_for_target(target, act_bits)
    if (layout.lanes, layout.group) == (lanes, group):
        return layout
    return Int8Layout(lanes, group, None)


def _schedule_dense(sch: s_tir.Schedule, target, act_bits: int) -> s_tir.Schedule:
    layout = _layout_of(sch, target, act_bits)
    acc = sch.get_sblock(ACC_BLOCK)
    m, n, ko, ki = sch.get_loops(acc)
    rows, cols = int(sch.get(m).extent), int(sch.get(n).extent)
    row_block = ROW_BLOCK if rows % ROW_BLOCK == 0 else rows
    col_vectors = _divisor_up_to(cols // layout.lanes, COL_VECTORS.get(layout.lanes, 2))
    m_out, m_in = sch.split(m, [None, row_block])
    n_out, n_vec, n_lane = sch.split(n, [None, col_vectors, layout.lanes])
    if layout.intrin is None:  # plain loops: vectorized over the lanes, innermost
        sch.reorder(m_out, n_out, ko, m_in, n_vec, ki, n_lane)
    else:
        sch.reorder(m_out, n_out, ko, m_in, n_vec, n_lane, ki)
    out = sch.get_sblock(OUT_BLOCK)
    sch.reverse_compute_at(out, n_out)
    out_n = sch.get_loops(out)[-1]
    sch.vectorize(sch.split(out_n, [None, vector_lanes(target, 32)])[1])
    sch.parallel(m_out)
    if layout.intrin is None:
        sch.vectorize(n_lane)
    init = sch.decompose_reduction(acc, ko)
    sch.vectorize(sch.get_loops(init)[-1])
    if layout.intrin is not None:
        sch.tensorize(n_lane, ensure(layout.intrin))
    sch.unroll(m_in)
    sch.unroll(n_vec)
    return sch


def _schedule_quantize(sch: s_tir.Schedule, target) -> s_tir.Schedule:
    lanes = vector_lanes(target, 32)
    # The scale and zero point are outputs, so each stage keeps its own row loop.
    for name in (MIN_BLOCK, MAX_BLOCK):
        _vector_reduction(sch, sch.get_sblock(name), lanes)
    for name in (SCALE_BLOCK, ZP_BLOCK):
        sch.parallel(sch.get_loops(sch.get_sblock(name))[0])
    row, depth = sch.get_loops(sch.get_sblock(QUANT_BLOCK))
    sch.vectorize(sch.split(depth, [None, lanes])[1])
    sch.parallel(row)
    return sch


def _vector_reduction(sch: s_tir.Schedule, block, lanes: int) -> None:
    """A row reduction ``[M] <- [M, D]`` as ``lanes`` partial results per row (``rfactor``),
    vectorized, then reduced; a plain row-parallel loop where ``lanes`` does not divide D."""
    row, depth = sch.get_loops(block)
    if int(sch.get(depth).extent) % lanes:
        sch.parallel(row)
        return
    _, lane = sch.split(depth, [None, lanes])
    partial = sch.rfactor(lane, factor_axis=1)
    part_row, _, part_lane = sch.get_loops(partial)
    sch.vectorize(part_lane)
    sch.parallel(part_row)
    sch.parallel(sch.get_loops(block)[0])
