"""Register-blocked CPU schedule for conv2d NCHW/OIHW (with fused pad, bias add, relu)."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from ._loops import MAX_VECTOR_EXTENT, is_cpu_target, largest_divisor, prod, vector_lanes
from ._tiling import MAX_ACC_VECTORS, index_vars, operand_reads, register_tile, same_var
from ._tiling import split_main_block

MAX_CHANNEL_TILE = 8


def _is_conv2d_nchw(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """out[n, f, y, x] += data[n, rc, ..., ...] * weight[f, rc, ry, rx]."""
    stmt = sch.get(block)
    n, f, y, x, rc, ry, rx = [iv.var for iv in stmt.iter_vars]
    reads, out = operand_reads(sch, block)
    out_idx = index_vars(out)
    if len(reads) != 2 or not out_idx or len(out_idx) != 4:
        return False
    if not all(same_var(a, b) for a, b in zip(out_idx, (n, f, y, x))):
        return False
    for data, weight in (reads, reads[::-1]):
        w_idx = index_vars(weight)
        if w_idx and len(w_idx) == 4 and all(
            same_var(a, b) for a, b in zip(w_idx, (f, rc, ry, rx))
        ):
            d_mins = [r.min for r in data.region]
            return len(d_mins) == 4 and same_var(d_mins[0], n) and same_var(d_mins[1], rc)
    return False


class Conv2dNCHW(ScheduleRule):
    """Direct conv2d NCHW: parallel(n, f_outer, y, x_outer) -> rc, ry, rx ->
    unroll(f_inner) -> vector(x_inner); an f_inner x x_inner tile stays in registers,
    padding is inlined into the input loads and the epilogue runs at write-back."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool):
        if not isinstance(func, tirx.PrimFunc) or not is_cpu_target(target):
            return None
        sch = s_tir.Schedule(func)
        split = split_main_block(sch, "SSSSRRR")
        if split is None or not _is_conv2d_nchw(sch, split[0].block_rv):
            return None
        info, epilogue = split
        block = info.block_rv
        dom = info.dom()
        n_f, n_x = dom[1], dom[3]
        lanes = vector_lanes(target, 32)
        if n_x <= MAX_VECTOR_EXTENT:
            xr = n_x
        else:
            xr = largest_divisor(n_x, MAX_VECTOR_EXTENT, lanes) or largest_divisor(
                n_x, MAX_VECTOR_EXTENT
            )
        n_vec = -(-xr // lanes)
        fr = largest_divisor(n_f, max(1, min(MAX_CHANNEL_TILE, MAX_ACC_VECTORS // n_vec)))
        nn, f, y, x, rc, ry, rx = sch.get_loops(block)
        fo, fi = sch.split(f, factors=[None, fr])
        xo, xi = sch.split(x, factors=[None, xr])
        sch.reorder(fo, y, xo, rc, ry, rx, fi, xi)
        work = prod(dom)
        register_tile(sch, block, [nn, fo, y, xo], [rc, ry, rx], [fi], xi, epilogue, lanes, work)
        return sch
