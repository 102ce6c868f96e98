"""Register-blocked CPU matmul/dense schedule: C[.., i, j] += A[.., i, k] * B[.., k, j]."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from ._loops import MAX_VECTOR_EXTENT, is_cpu_target, largest_divisor, prod, vector_lanes
from ._tiling import MAX_ACC_VECTORS, index_vars, operand_reads, register_tile, same_var
from ._tiling import split_main_block

MAX_ROW_TILE = 8


def _is_nn_matmul(sch: s_tir.Schedule, info) -> bool:
    """A[.., i, k] and B[.., k, j] (either operand order) writing C[.., i, j]."""
    stmt = sch.get(info.block_rv)
    ivars = [iv.var for iv in stmt.iter_vars]
    i, j, k = ivars[-3], ivars[-2], ivars[-1]
    reads, out = operand_reads(sch, info.block_rv)
    out_idx = index_vars(out)
    if len(reads) != 2 or not out_idx or len(out_idx) < 2:
        return False
    if not (same_var(out_idx[-2], i) and same_var(out_idx[-1], j)):
        return False
    idx = [index_vars(r) for r in reads]
    if any(not x or len(x) < 2 for x in idx):
        return False

    def is_a(x):
        return same_var(x[-2], i) and same_var(x[-1], k)

    def is_b(x):
        return same_var(x[-2], k) and same_var(x[-1], j)

    return (is_a(idx[0]) and is_b(idx[1])) or (is_a(idx[1]) and is_b(idx[0]))


# Accumulator vectors of an AVX2 (16-register) micro-kernel: 12 (6 x 16 columns) measured up to 2x
# slower than 8 (4 x 16) on ResNet-50's 1x1 convs and ShuffleNet's grouped ones (Zen 3).
NARROW_ACC_VECTORS = 8


def _wide_tiles(m: int, n: int, lanes: int) -> tuple[int, int]:
    """(mr, nr) for AVX-512 (as measured on Zen 4): the widest divisor of n up to 64 columns, then rows."""
    if n <= MAX_VECTOR_EXTENT:
        nr = n
    else:
        nr = (largest_divisor(n, MAX_VECTOR_EXTENT, lanes) or largest_divisor(n, MAX_VECTOR_EXTENT, max(lanes // 2, 1))
              or largest_divisor(n, MAX_VECTOR_EXTENT))
    n_vec = -(-nr // lanes)
    return largest_divisor(m, max(1, min(MAX_ROW_TILE, MAX_ACC_VECTORS // n_vec))), nr


def pick_tiles(m: int, n: int, lanes: int) -> tuple[int, int]:
    """(row tile mr, column tile nr) with nr | n vectorized and mr | m unrolled.

    With fewer than 16 lanes (AVX2) and a multiple of ``lanes`` dividing ``n``, nr is whole vectors
    (a 28- or 56-column tile, as AVX-512 picks, measured 3-10x slower on AVX2) and the tile
    maximizes the FMA share of each reduction step (mr x nr_vec FMAs per nr_vec loads and mr
    broadcasts) x its accumulator count (8 hide the FMA latency), within ``NARROW_ACC_VECTORS``
    accumulators, fewer vectors per row on a tie (one 64-byte line of the B row per step)."""
    vecs = [v for v in range(1, n // lanes + 1) if n % (v * lanes) == 0 and v * lanes <= MAX_VECTOR_EXTENT]
    if lanes >= 16 or not vecs:
        return _wide_tiles(m, n, lanes)
    best, best_key = None, None
    for n_vec in vecs:
        for mr in range(1, min(MAX_ROW_TILE, NARROW_ACC_VECTORS // n_vec, m) + 1):
            if m % mr == 0:
                acc = mr * n_vec
                key = (round(min(1.0, acc / (n_vec + mr)) * min(1.0, acc / 8), 3), -n_vec, acc)
                if best_key is None or key > best_key:
                    best, best_key = (mr, n_vec * lanes), key
    return best


class Matmul(ScheduleRule):
    """GEMM / batched GEMM with fused injective prologue and epilogue (bias, relu, ...).

    Loop nest: parallel(batch, j_outer, i_outer) -> k -> unroll(i_inner) -> vector(j_inner),
    accumulating an mr x nr tile in registers, with the epilogue applied at write-back.
    """

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool):
        if not isinstance(func, tirx.PrimFunc) or not is_cpu_target(target):
            return None
        sch = s_tir.Schedule(func)
        split = split_main_block(sch)
        if split is None:
            return None
        kinds = split[0].dom_kind()
        if len(kinds) < 3 or kinds[-1] != "R" or set(kinds[:-1]) != {"S"}:
            return None
        if not _is_nn_matmul(sch, split[0]):
            return None
        info, epilogue = split
        block = info.block_rv
        dom = info.dom()
        m, n = dom[-3], dom[-2]
        lanes = vector_lanes(target, 32)
        mr, nr = pick_tiles(m, n, lanes)
        *batch, i, j, kl = sch.get_loops(block)
        io, ii = sch.split(i, factors=[None, mr])
        jo, ji = sch.split(j, factors=[None, nr])
        unroll = [ii]
        if nr > lanes and nr % lanes == 0:
            jv, ji = sch.split(ji, factors=[None, lanes])
            unroll.append(jv)
        sch.reorder(jo, io, kl, *unroll, ji)
        work = prod(dom)
        register_tile(sch, block, [*batch, jo, io], [kl], unroll, ji, epilogue, lanes, work)
        return sch
