"""Shared loop, target and safety helpers for the dense-op CPU schedule rules."""

from __future__ import annotations

import logging
from collections.abc import Callable

import tvm_ffi

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from lut_tvm.target_features import target_features

LOG = logging.getLogger("lut_tvm.schedules")

get_realize = tvm_ffi.get_global_func("s_tir.schedule.GetSBlockRealize")

# Below this many output elements (times reduction extent) a kernel is run serially:
# the thread-pool launch costs more than the work itself.
MIN_PARALLEL_WORK = 4096
# Largest innermost extent vectorized without splitting (LLVM legalizes odd widths).
MAX_VECTOR_EXTENT = 64


def is_cpu_target(target: Target) -> bool:
    """True for the LLVM / C CPU targets these rules are written for."""
    return target is not None and target.kind.name in ("llvm", "c")


def vector_lanes(target: Target, dtype_bits: int = 32) -> int:
    """SIMD lanes for ``dtype_bits``-wide elements on ``target`` (AVX-512 f32 -> 16, AVX2 8)."""
    return target_features(target).vector_lanes(dtype_bits)


def extent(sch: s_tir.Schedule, loop: s_tir.schedule.LoopRV) -> int | None:
    """Constant extent of ``loop`` or None when it is symbolic."""
    ext = sch.get(loop).extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def prod(values) -> int:
    """Product of integers (1 for an empty sequence)."""
    result = 1
    for value in values:
        result *= value
    return result


def largest_divisor(n: int, limit: int, multiple_of: int = 1) -> int:
    """Largest d <= limit with n % d == 0 and d % multiple_of == 0 (0 if none)."""
    for d in range(min(n, limit), 0, -1):
        if n % d == 0 and d % multiple_of == 0:
            return d
    return 0


def write_dtype_bits(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> int:
    """Bit width of the first buffer written by ``block`` (32 if unknown)."""
    writes = sch.get(block).writes
    return int(writes[0].source.dtype.bits) if writes else 32


def root_blocks(sch: s_tir.Schedule) -> list[s_tir.schedule.SBlockRV]:
    """Blocks directly under the root block, in program order."""
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def block_kinds(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> str:
    """Iteration kinds of ``block`` ("S" data-parallel, "R" reduction, "O" other)."""
    kind = {tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}
    return "".join(kind.get(iv.iter_type, "O") for iv in sch.get(block).iter_vars)


def attempt(sch: s_tir.Schedule, step: Callable[[s_tir.Schedule], object]) -> bool:
    """Run a schedule step, swallowing ScheduleError (primitives are atomic)."""
    try:
        step(sch)
        return True
    except Exception:  # pylint: disable=broad-except
        return False


def _elements(buffer) -> int | None:
    dims = [int(d) if isinstance(d, tirx.IntImm) else None for d in buffer.shape]
    return None if None in dims else prod(dims)


def reverse_inline(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """``reverse_compute_inline`` of ``block``, unless a producer's output is also read by
    another block (TVM 0.27 then inlines anyway and that output is never written: the build
    fails with "buffer used before its definition") or ``block`` writes fewer elements than a
    producer does (a slice: TVM 0.27 inlines it over the producer's whole domain and writes
    past the end of the output). True if inlined."""
    producers = sch.get_producers(block)
    if any(len(sch.get_consumers(p)) != 1 for p in producers):
        return False
    out = _elements(sch.get(block).writes[0].source) if sch.get(block).writes else None
    if any(out is None or _elements(w.source) != out for p in producers for w in sch.get(p).writes):
        return False
    return attempt(sch, lambda s: s.reverse_compute_inline(block))


def try_inline_all(sch: s_tir.Schedule, blocks: list[s_tir.schedule.SBlockRV]) -> list:
    """Inline (forward, then reverse) as many of ``blocks`` as possible; return the rest."""
    remaining = list(blocks)
    changed = True
    while changed:
        changed = False
        for blk in list(remaining):
            if attempt(sch, lambda s, b=blk: s.compute_inline(b)) or reverse_inline(sch, blk):
                remaining.remove(blk)
                changed = True
    return remaining


def parallel_vectorize(
    sch: s_tir.Schedule,
    loops: list[s_tir.schedule.LoopRV],
    lanes: int,
    work: int | None = None,
    vectorize: bool = True,
) -> None:
    """Vectorize the last of ``loops`` and parallelize the fused others.

    ``loops`` must be perfectly nested loops of data-parallel iterations. The innermost
    loop is vectorized whole if short, else split by a divisor that is a multiple of
    ``lanes`` (non-divisible splits would add predicates that defeat vectorization).
    """
    if not loops:
        return
    if work is None:
        work = prod(extent(sch, lp) or MIN_PARALLEL_WORK for lp in loops)
    outer = list(loops)
    inner_ext = extent(sch, loops[-1])
    if vectorize and inner_ext is not None and inner_ext > 1:
        if inner_ext <= MAX_VECTOR_EXTENT:
            factor = inner_ext
        else:
            factor = largest_divisor(inner_ext, MAX_VECTOR_EXTENT, lanes)
            factor = factor or largest_divisor(inner_ext, MAX_VECTOR_EXTENT, lanes // 2 or 1)
            factor = factor if factor >= 4 else 0
        if factor:
            if factor == inner_ext:
                vec = outer.pop()
            else:
                lo, vec = sch.split(outer.pop(), factors=[None, factor])
                outer.append(lo)
            attempt(sch, lambda s: s.vectorize(vec))
    if outer and work >= MIN_PARALLEL_WORK:
        fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        attempt(sch, lambda s: s.parallel(fused))


def safe_rule(rule: ScheduleRule, cpu_only: bool = True) -> ScheduleRule:
    """Wrap ``rule`` so that any exception means "not applicable" instead of a crash."""

    class _Safe(ScheduleRule):
        def apply(self, func, target, tunable):
            if cpu_only and not is_cpu_target(target):
                return None
            try:
                return rule.apply(func, target, tunable)
            except Exception as err:  # pylint: disable=broad-except
                LOG.debug("rule %s does not apply (%s: %s); the next rule schedules the function",
                          type(rule).__name__, type(err).__name__, err)
                return None

        def __repr__(self):
            return f"Safe({type(rule).__name__})"

    _Safe.__name__ = f"Safe{type(rule).__name__}"
    return _Safe()
