"""Shared block analysis and register-tiling helpers for the matmul and conv2d rules."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_sblock_info

from ._loops import MIN_PARALLEL_WORK, attempt, block_kinds, get_realize, parallel_vectorize
from ._loops import reverse_inline
from ._loops import root_blocks, try_inline_all

# Accumulator vector registers a micro-kernel may use (AVX-512 has 32 zmm).
MAX_ACC_VECTORS = 24


def split_main_block(sch: s_tir.Schedule, kinds: str | None = None, keep=None):
    """Return (main reduction SBlockInfo, epilogue block RVs) of an unscheduled func.

    Requires exactly one reduction block among the root's children, optionally with kinds
    ``kinds`` (e.g. "SSR"); injective producers are inlined into it and the blocks after
    it are returned, in order, as the epilogue. ``keep(sch, main, producer)``, if given, may
    claim producers that are to stay separate blocks (e.g. a conv's pad, tiled later).
    """
    blocks = root_blocks(sch)
    kinds_of = [block_kinds(sch, b) for b in blocks]
    if any("O" in k for k in kinds_of) or any(sch.get_child_blocks(b) for b in blocks):
        return None
    reductions = [i for i, k in enumerate(kinds_of) if "R" in k]
    if len(reductions) != 1:
        return None
    pos = reductions[0]
    main, pre, post = blocks[pos], blocks[:pos], blocks[pos + 1 :]
    if keep is not None:
        pre = [blk for blk in pre if not keep(sch, main, blk)]
    if try_inline_all(sch, pre):
        return None  # a producer we cannot fold in: leave to the generic rules
    # Expect the unscheduled form: one loop per block iter var, in order.
    info = get_sblock_info(sch, main)
    loops = sch.get_loops(main)
    values = get_realize(sch, main).iter_values
    if len(loops) != len(values) or not all(
        sch.get(lp).loop_var.same_as(v) for lp, v in zip(loops, values)
    ):
        return None
    if (kinds is not None and info.dom_kind() != kinds) or any(
        not isinstance(d, int) for d in info.dom()
    ):
        return None
    return info, post


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


def inline_epilogue(sch: s_tir.Schedule, epilogue: list) -> list:
    """Fold the epilogue blocks into the write-back block that precedes them (in order, while
    each reads only what that block writes); then inline what is left among themselves (an
    epilogue reading an intermediate twice, e.g. GELU's ``x * f(x)``). Returns the blocks
    still separate."""
    leftover = []
    for epi in epilogue:
        if leftover or not reverse_inline(sch, epi):
            leftover.append(epi)
    return try_inline_all(sch, leftover)


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
    leftover = inline_epilogue(sch, epilogue)
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    sch.reverse_compute_at(wb, fused, preserve_unit_loops=True)
    if work >= MIN_PARALLEL_WORK and sch.get(fused).extent.value > 1:
        sch.parallel(fused)
    for lp in unroll:
        sch.unroll(lp)
    sch.vectorize(vec)
    attempt(sch, lambda s: s.vectorize(sch.get_loops(wb)[-1]))
    # Decompose last: parallel/vectorize need the block to still be a reduction block.
    init = sch.decompose_reduction(block, reduce_loops[0])
    attempt(sch, lambda s: s.vectorize(sch.get_loops(init)[-1]))
    for epi in leftover:
        parallel_vectorize(sch, sch.get_loops(epi), lanes)
