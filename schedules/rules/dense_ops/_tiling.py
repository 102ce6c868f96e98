"""Shared block analysis and register-tiling helpers for the matmul and conv2d rules."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func

from ._loops import MIN_PARALLEL_WORK, attempt, parallel_vectorize, try_inline_all

# Accumulator vector registers a micro-kernel may use (AVX-512 has 32 zmm).
MAX_ACC_VECTORS = 24


def split_main_block(sch: s_tir.Schedule, kinds: str | None = None):
    """Normalize ``sch`` and return (main reduction SBlockInfo, epilogue block RVs).

    Requires exactly one non-injective block, optionally with the iteration kinds
    ``kinds`` (e.g. "SSR"); injective producers are inlined into it and injective
    consumers are returned (after inlining among themselves) as the epilogue.
    """
    infos = normalize_prim_func(sch)
    if not infos:
        return None
    reductions = [i for i in infos if not i.is_injective()]
    if len(reductions) != 1:
        return None
    main = reductions[0]
    if kinds is not None and main.dom_kind() != kinds:
        return None
    if any(not isinstance(d, int) for d in main.dom()):
        return None
    pos = infos.index(main)
    pre = [i.block_rv for i in infos[:pos]]
    post = [i.block_rv for i in infos[pos + 1 :]]
    if try_inline_all(sch, pre):
        return None  # a producer we cannot fold in: leave to the generic rules
    # Re-derive the iteration info: inlining producers keeps loops but be safe.
    main = _refresh(sch, main)
    return main, post


def _refresh(sch: s_tir.Schedule, info: SBlockInfo) -> SBlockInfo:
    for new in normalize_prim_func(sch) or []:
        if sch.get(new.block_rv).same_as(sch.get(info.block_rv)):
            return new
    return info


def index_vars(region) -> list:
    """Per-dimension Var of a point access region (None where the index is not a Var)."""
    out = []
    for rng in region.region:
        if not (isinstance(rng.extent, tirx.IntImm) and int(rng.extent) == 1):
            return None
        out.append(rng.min if isinstance(rng.min, tirx.Var) else None)
    return out


def same_var(a, b) -> bool:
    """True when both are the same tirx.Var."""
    return a is not None and b is not None and a.same_as(b)


def operand_reads(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV):
    """(read regions other than the output, output region) of a reduction block."""
    stmt = sch.get(block)
    out = stmt.writes[0]
    reads = [r for r in stmt.reads if not r.source.same_as(out.source)]
    return reads, out


def register_tile(
    sch: s_tir.Schedule,
    block: s_tir.schedule.SBlockRV,
    outer: list,
    reduce_loops: list,
    unroll: list,
    vec,
    epilogue: list,
    lanes: int,
    work: int,
) -> None:
    """Turn an already reordered loop nest ``outer + reduce_loops + unroll + [vec]`` of a
    reduction ``block`` into a register-blocked micro-kernel.

    The accumulator tile lives in a "local" cache (promoted to registers by LLVM); the
    write-back, with the epilogue inlined into it when possible, runs once per tile.
    """
    wb = sch.cache_write(block, 0, "local")
    leftover = []
    for epi in epilogue:
        if not attempt(sch, lambda s, e=epi: s.reverse_compute_inline(e)):
            leftover.append(epi)
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    sch.reverse_compute_at(wb, fused, preserve_unit_loops=True)
    init = sch.decompose_reduction(block, reduce_loops[0])
    for lp in unroll:
        sch.unroll(lp)
    sch.vectorize(vec)
    depth = len(sch.get_loops(block)) - len(reduce_loops) - len(unroll) - 1
    for blk in (init, wb):
        loops = sch.get_loops(blk)
        if len(loops) > depth:
            attempt(sch, lambda s, lp=loops[-1]: s.vectorize(lp))
    if work >= MIN_PARALLEL_WORK and sch.get(fused).extent.value > 1:
        sch.parallel(fused)
    for epi in leftover:
        parallel_vectorize(sch, sch.get_loops(epi), lanes)
