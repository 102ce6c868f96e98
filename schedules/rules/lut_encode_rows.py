"""Schedule of the row-vectorized encodes (``encode_dense_rows``, ``encode_conv2d_rows``): rows in
the vector lanes. A conv's rows are its output positions; its input copy, if any (padded or
column-shifted, ``lut_conv_shuffle_compute``), is made first, in parallel.

The work is split into tiles of one codebook ``c`` x ``L`` rows (``L`` = one float32 register:
16 on AVX-512, 8 on AVX2, 4 on NEON, from ``lut_kind.vector_lanes``); the tiles run in
parallel. Inside a tile, with the ``K`` centroids split into ``J`` chains of consecutive
centroids (``J`` = 2 for even K >= 4; see ``lut_encode_rows_compute``):

1. for each centroid ``k`` (``k`` loop and chain loop unrolled, centroids of the ``J`` chains
   interleaved): one accumulator register ``acc = sum_v x[m0:m0+L, cV+v] * P[c, k, v]``
   (scalar broadcast of ``P``, ``v`` ascending and unrolled), read from a transposed copy
   (transpose and chunk modes, below) or straight from ``x`` (inline): the ``V`` row vectors
   are the same for every ``k``, so LLVM loads them once per tile and keeps them in registers;
2. the distance ``||P||^2 - 2 acc`` updates chain ``j``'s running argmin elementwise
   (compare, select index, min distance);
3. the ``J`` chains are merged in ascending order (a later chain wins only if strictly smaller,
   so the first index wins a tie), and the ``L`` codes are stored contiguously into
   ``codes[c, m0:m0+L]``.

An ``M`` that is not a multiple of 16 (``ROW_ALIGN``) keeps whole tiles: the compute moves the
last 16-row tile back to rows ``[M - 16, M)`` (overlapping the one before; a clamped row index
instead would turn every strided load into per-lane index arithmetic, 2x slower here), and the
codes are then written by a pass of their own (parallel over codebooks, vectorized up to the
last tile). A single partial tile (``M < 16``) repeats the last row instead.

Chunk mode (``xt_mode="chunk"``; the default for a conv encode whose compute copied the input
zero-padded, see ``lut_conv_shuffle_compute.default_input_layout``): where 16-row tiles
straddle output rows (OW = 20, 10, 5), a tile's window elements sit at irregular offsets and
the in-place reads compile to one ``vpextrd`` + ``vinsertps`` gather per element (144 per tile
at V = 9, against 144 FMAs: 3-4x the arithmetic's time). Instead, the rows are cut into chunks
of whole output rows and whole tiles (a multiple of ``lcm(16, OW)`` rows, sampled when
tunable), run in parallel; each chunk first copies its windows for every codebook into a
``[D, rows]`` buffer, one contiguous vector per (output row, tap, input channel), then runs
its tiles (row tile outer, codebook inner: the centroids change from tile to tile, so LLVM
keeps reading them as embedded broadcasts instead of hoisting 144 broadcast registers to the
stack, which made a codebook-outer chunk 1.5-3x slower) reading that buffer with plain vector
loads.

Transpose mode (``xt_mode="transpose"``; the default for a dense encode on 16- or 8-lane
targets when ``D`` is a multiple of ``L`` and ``M`` of 16): the in-place reads of ``x [M, D]``
compile to one ``vinsertps``/``vmovss`` per element (256 per tile at V = 16), and a plain TIR
transposed copy to a scatter. Instead, each row tile (in parallel) walks its codebooks in
groups of ``G`` (``G V`` a multiple of ``L``, the ``[G V, L]`` copy under ``TRANSPOSE_BYTES``;
sampled when tunable): the group's input is copied transposed by ``L x L`` in-register
transposes (``schedules.intrin.transpose16``: ``L`` row loads, 64 / 24 two-source shuffles,
``L`` vector stores), then its tiles read that copy with plain vector loads. 1.4-1.7x faster
than inline at M = 128 (``benchmarks/results/encode_speed.md``). A shifted last tile (``M``
not a multiple of 16) or ``D`` not a multiple of ``L`` keeps the inline path.

For ``V > MAX_UNROLL_SUB_LEN`` the tile's input is first copied transposed into a ``[V, L]``
buffer (``xt_mode="tile"``), the ``v`` loop is not unrolled and the products read that buffer.
Above ``MAX_UNROLL_CENTROIDS`` centroids per chain the chain loop is split, the outer part a
serial loop.

Alternatives measured on this machine (AVX-512, M = 128, K = 16, one thread): the textbook
``K`` accumulator registers with ``v`` outermost was 1.3-2x slower (its ``[K, L]`` block is
1 KiB at K = L = 16 and then lands behind a workspace call per tile, see below); a transposed
copy of the whole input, or of the tile, written as plain TIR (a scatter) before the products
was no faster than reading ``x`` in place (the in-register transposes above are); AVX-512 ``vgatherdps`` (through a tensor intrinsic) instead of the element loads was
1.5-2x slower.

Every scratch buffer keeps its default ``global`` scope: TVM 0.27 (``LowerTVMBuiltin``) puts a
``global`` allocation under 1024 bytes on the stack (where LLVM promotes it to registers) and
anything else, ``local`` scope included, behind a ``TVMBackendAllocWorkspace`` call per tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule

from schedules.lut_encode_rows_compute import (
    ARGMIN_BLOCK,
    CODES_BLOCK,
    DOT_BLOCK,
    ENCODE_DENSE_ROWS,
    PARTIAL_BLOCK,
    ROW_ALIGN,
    XT_BLOCK,
    shifted_last_tile,
)
from schedules.lut_conv_shuffle_compute import (
    ENCODE_CONV2D_ROWS,
    INPUT_COPY_BLOCK,
    chunk_block,
)
from schedules.attrs import INPUT_LAYOUT_ATTR, OUT_WIDTH_ATTR

from schedules.intrin.registry import ensure
from schedules.intrin.transpose16 import TRANSPOSE_F32

from .lut_kind import has_block, lut_kind, vector_lanes

# Unroll the sub-vector loop (and read x in place) up to this V.
MAX_UNROLL_SUB_LEN = 32
# Centroids per chain unrolled in one pass; larger K loops over passes.
MAX_UNROLL_CENTROIDS = 8
XT_MODES = ("auto", "inline", "tile", "chunk", "transpose")
# A chunk's copied windows ([D, rows] float32) stay under this (L1/L2-resident); at least one
# block of lcm(16, OW) rows.
CHUNK_BYTES = 64 * 1024
# A transposed copy ([G V, L] float32, ``transpose`` mode) stays under this (in L1): 4 KiB was
# within noise of 16 KiB and 1.2x faster than the whole row's copy (M = 128, D = 384 / 1536).
TRANSPOSE_BYTES = 4 * 1024
# Chunk sizes the tunable schedule samples from.
MAX_CHUNK_CHOICES = 4


def _extents(sch: s_tir.Schedule, block) -> list[int]:
    """Extents of ``block``'s iteration variables, in order."""
    return [int(iv.dom.extent) for iv in sch.get(block).iter_vars]


def _has_reduction(sch: s_tir.Schedule, block) -> bool:
    return any(int(iv.iter_type) == 2 for iv in sch.get(block).iter_vars)


def _loops_by_extent(sch: s_tir.Schedule, block, extents) -> tuple:
    """The innermost loops of ``block`` matched to ``extents`` (outer to inner); a unit extent
    has no loop after ``compute_at`` and maps to None."""
    wanted = [e for e in extents if e > 1]
    loops = sch.get_loops(block)[len(sch.get_loops(block)) - len(wanted):] if wanted else []
    found = iter(loops)
    return tuple(next(found) if e > 1 else None for e in extents)


def _present(*loops) -> list:
    return [loop for loop in loops if loop is not None]


def _schedule_input_copy(sch: s_tir.Schedule) -> None:
    """The conv encode's input copy (padded / column-shifted): outer loops in parallel."""
    if not has_block(sch, INPUT_COPY_BLOCK):
        return
    *outer, _, col = sch.get_loops(sch.get_sblock(INPUT_COPY_BLOCK))
    sch.parallel(sch.fuse(*outer))
    sch.vectorize(col)


def _chunk_candidates(func, rows: int, depth: int) -> list[int]:
    """Row counts a chunk can take (``chunk`` mode), default first: multiples of
    ``lcm(16, OW)`` that divide ``M`` (whole tiles, whole output rows); [] if there is none or
    the function is not a conv encode with a padded input copy. The default is the largest
    whose ``[D, rows]`` copy stays under ``CHUNK_BYTES``."""
    attrs = func.attrs
    if attrs is None or str(attrs.get(INPUT_LAYOUT_ATTR, "")) != "padded":
        return []
    block = chunk_block(int(attrs[OUT_WIDTH_ATTR]))
    if rows % block:
        return []
    sizes = [block * f for f in range(1, rows // block + 1) if (rows // block) % f == 0]
    sizes = [r for r in sizes if r * depth * 4 <= CHUNK_BYTES] or sizes[:1]
    return [sizes[-1], *sizes[:-1]][:MAX_CHUNK_CHOICES]


def _transpose_groups(num_codebooks: int, sub_len: int, lanes: int) -> list[int]:
    """Codebooks per transposed copy (``transpose`` mode), default first: divisors ``G`` of C
    whose ``G V`` features are whole ``L x L`` blocks; the default is the largest whose
    ``[G V, L]`` copy stays under ``TRANSPOSE_BYTES`` (the whole row if none does)."""
    sizes = [g for g in range(1, num_codebooks + 1)
             if num_codebooks % g == 0 and (g * sub_len) % lanes == 0]
    fitting = [g for g in sizes if g * sub_len * lanes * 4 <= TRANSPOSE_BYTES] or sizes[:1]
    return [fitting[-1], *[g for g in sizes if g != fitting[-1]][-(MAX_CHUNK_CHOICES - 1):]]


@dataclass
class _Encode:
    """The blocks and sizes of one row encode, read off its schedule."""

    xt: object
    dot: object
    partial: object
    argmin: object
    codes: object
    depth: int
    rows_pad: int
    rows: int
    num_codebooks: int
    sub_len: int
    lanes: int
    chunks: list

    @classmethod
    def of(cls, sch: s_tir.Schedule, func: tirx.PrimFunc, target) -> "_Encode":
        xt, dot = sch.get_sblock(XT_BLOCK), sch.get_sblock(DOT_BLOCK)
        partial, argmin = sch.get_sblock(PARTIAL_BLOCK), sch.get_sblock(ARGMIN_BLOCK)
        codes = sch.get_sblock(CODES_BLOCK)
        depth, rows_pad = (int(d) for d in sch.get(xt).writes[0].source.shape)
        num_codebooks = int(sch.get(dot).writes[0].source.shape[0])
        rows = int(sch.get(codes).writes[0].source.shape[1])
        return cls(xt, dot, partial, argmin, codes, depth, rows_pad, rows, num_codebooks,
                   depth // num_codebooks,
                   math.gcd(vector_lanes(target, 32), ROW_ALIGN),  # a tile never crosses 16 rows
                   _chunk_candidates(func, rows, depth))


@dataclass
class _Tiles:
    """Loops of the tile split: the parallel ``outer``, the ``tile`` the chains go under, the
    lane loop ``m_in``, the centroid loop ``j`` and (transpose mode) the codebook-group loop."""

    outer: object
    tile: object
    m_in: object
    j: object
    c_group: object = None


def _pick_xt_mode(xt_mode: str, func: tirx.PrimFunc, enc: _Encode) -> str:
    """``xt_mode`` resolved: auto to chunk / transpose where they apply, else (and where the
    asked mode does not apply) inline or tile by V."""
    transposable = (
        lut_kind(func) == ENCODE_DENSE_ROWS and enc.lanes in TRANSPOSE_F32
        and enc.depth % enc.lanes == 0 and enc.rows % ROW_ALIGN == 0
    )
    if xt_mode == "auto":
        xt_mode = "chunk" if enc.chunks else "transpose" if transposable else "auto"
    if ((xt_mode == "chunk" and not enc.chunks) or (xt_mode == "transpose" and not transposable)
            or xt_mode == "auto"):
        xt_mode = "inline" if enc.sub_len <= MAX_UNROLL_SUB_LEN else "tile"
    return xt_mode


def _sampled(sch: s_tir.Schedule, choices: list, tunable: bool):
    """The first of ``choices``, or a uniform ``sample_categorical`` of them when tunable."""
    if tunable and len(choices) > 1:
        return sch.sample_categorical(choices, [1.0 / len(choices)] * len(choices), 0)
    return choices[0]


def _split_tiles(sch: s_tir.Schedule, enc: _Encode, xt_mode: str, tunable: bool) -> _Tiles:
    c, m, j = sch.get_loops(enc.argmin)
    lanes = enc.lanes
    if xt_mode == "chunk":
        # Row chunks in parallel; in a chunk, (row tile, codebook), then chains, then lanes.
        per_chunk = _sampled(sch, [rows_in_chunk // lanes for rows_in_chunk in enc.chunks], tunable)
        outer, m_tile, m_in = sch.split(m, [None, per_chunk, lanes])
        sch.reorder(outer, m_tile, c, j, m_in)
        tile = sch.fuse(m_tile, c)
        sch.parallel(outer)
        return _Tiles(outer, tile, m_in, j)
    if xt_mode == "transpose":
        # Row tiles in parallel; in a row tile, codebook groups: each group's transposed
        # copy [G V, L], then its codebooks.
        outer, m_in = sch.split(m, [None, lanes])
        sch.reorder(outer, c, j, m_in)
        per_group = _sampled(sch, _transpose_groups(enc.num_codebooks, enc.sub_len, lanes), tunable)
        c_group, tile = sch.split(c, [None, per_group])
        sch.parallel(outer)
        return _Tiles(outer, tile, m_in, j, c_group)
    # (codebook, row tile) in parallel, then chains, then lanes.
    m_out, m_in = sch.split(m, [None, lanes])
    sch.reorder(c, m_out, j, m_in)
    tile = sch.fuse(c, m_out)
    sch.parallel(tile)
    return _Tiles(tile, tile, m_in, j)


def _schedule_chains(sch: s_tir.Schedule, enc: _Encode, tile) -> tuple:
    """Chains under ``tile`` (centroid passes, centroids, chains interleaved, lanes) and one
    centroid's products (an [L] accumulator over v, v ascending); returns
    ``(k_out, k_in, p_chain, p_m, d_m, d_v)`` (None where a loop has extent 1)."""
    sch.compute_at(enc.partial, tile)
    _, num_chains, _, per_chain = _extents(sch, enc.partial)
    p_chain, p_m, p_k = _loops_by_extent(sch, enc.partial, (num_chains, enc.lanes, per_chain))
    k_out = k_in = None
    if p_k is not None:
        k_out, k_in = sch.split(p_k, [None, min(per_chain, MAX_UNROLL_CENTROIDS)])
    sch.reorder(*_present(k_out, k_in, p_chain, p_m))

    sch.compute_at(enc.dot, (_present(k_out, k_in, p_chain) or [tile])[-1])
    if _has_reduction(sch, enc.dot):
        d_m, d_v = _loops_by_extent(sch, enc.dot, (enc.lanes, enc.sub_len))
        sch.reorder(d_v, d_m)
    else:  # V = 1: a product, no sum
        (d_m,), d_v = _loops_by_extent(sch, enc.dot, (enc.lanes,)), None
    return k_out, k_in, p_chain, p_m, d_m, d_v


def _place_input(sch: s_tir.Schedule, func: tirx.PrimFunc, enc: _Encode, xt_mode: str,
                 tiles: _Tiles) -> None:
    """Where the products read ``x`` from (the ``xt`` block), by mode."""
    xt = enc.xt
    if xt_mode == "inline":
        sch.compute_inline(xt)
    elif xt_mode == "chunk":
        # The chunk's windows, [D, rows]: one output row (OW positions) per vector copy.
        sch.compute_at(xt, tiles.outer)
        _, col = sch.split(sch.get_loops(xt)[-1], [None, int(func.attrs[OUT_WIDTH_ATTR])])
        sch.vectorize(col)
    elif xt_mode == "transpose":
        # The row tile's input, [D, L]: one L x L in-register transpose per L features.
        sch.compute_at(xt, tiles.c_group)
        x_d, _ = sch.get_loops(xt)[-2:]
        sch.tensorize(sch.split(x_d, [None, enc.lanes])[1], ensure(TRANSPOSE_F32[enc.lanes]))
    else:
        sch.compute_at(xt, tiles.tile)
        sch.vectorize(sch.get_loops(xt)[-1])


def _annotate_and_decompose(sch: s_tir.Schedule, enc: _Encode, tiles: _Tiles, chains: tuple) -> None:
    """Vectorize / unroll (before decomposing: vectorize needs the reduction blocks whole), then
    split the reductions' inits off and vectorize them too."""
    k_out, k_in, p_chain, p_m, d_m, d_v = chains
    sch.vectorize(d_m)
    if d_v is not None and enc.sub_len <= MAX_UNROLL_SUB_LEN:
        sch.unroll(d_v)
    sch.vectorize(p_m)
    for loop in _present(k_in, p_chain):
        sch.unroll(loop)
    sch.vectorize(tiles.m_in)
    sch.unroll(tiles.j)
    if d_v is not None:
        sch.vectorize(sch.get_loops(sch.decompose_reduction(enc.dot, d_v))[-1])
    p_init = sch.decompose_reduction(enc.partial, _present(k_out, p_chain, p_m)[0])
    init_loops = sch.get_loops(p_init)
    tile_depth = [sch.get(lp).same_as(sch.get(tiles.tile)) for lp in init_loops].index(True)
    *init_chain, init_m = init_loops[tile_depth + 1:]  # below the tile loop
    sch.vectorize(init_m)
    for loop in init_chain:
        sch.unroll(loop)
    sch.vectorize(sch.get_loops(sch.decompose_reduction(enc.argmin, tiles.j))[-1])


def _schedule_codes(sch: s_tir.Schedule, enc: _Encode, tile) -> None:
    """The codes' store: under the tile, or (a shifted last tile) a pass of their own, since the
    moved last tile's codes come from other padded positions."""
    if shifted_last_tile(enc.rows):
        code_c, code_m = sch.get_loops(enc.codes)
        sch.parallel(code_c)
        head, _ = sch.loop_partition(code_m, [enc.rows_pad - ROW_ALIGN, None])
        sch.vectorize(sch.split(head, [None, enc.lanes])[1])
    else:
        sch.reverse_compute_at(enc.codes, tile)
        if enc.rows % enc.lanes == 0:
            sch.vectorize(sch.get_loops(enc.codes)[-1])


class LutEncodeRowsRule(ScheduleRule):
    """Schedules ``encode_dense_rows`` / ``encode_conv2d_rows`` PrimFuncs; None for anything else.

    ``xt_mode``: ``"inline"`` reads ``x`` strided inside the products, ``"tile"`` copies the
    tile's input transposed into a ``[V, L]`` buffer first, ``"chunk"`` copies a chunk of rows'
    windows first (conv encodes with a padded input copy only; others fall back to auto),
    ``"transpose"`` copies groups of codebooks' input with in-register transposes (dense
    encodes with ``D % L == 0`` and ``M % 16 == 0`` on 16/8-lane targets; others fall back to
    auto), ``"auto"`` is chunk or transpose where they apply, else inline up to
    ``V = MAX_UNROLL_SUB_LEN`` and tile above. With ``tunable`` the chunk size or the codebook
    group is sampled (``sample_categorical``).
    """

    def __init__(self, xt_mode: str = "auto"):
        if xt_mode not in XT_MODES:
            raise ValueError(f"xt_mode must be one of {XT_MODES}")
        self.xt_mode = xt_mode

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        if lut_kind(func) not in (ENCODE_DENSE_ROWS, ENCODE_CONV2D_ROWS):
            return None
        sch = s_tir.Schedule(func)
        _schedule_input_copy(sch)
        enc = _Encode.of(sch, func, target)
        xt_mode = _pick_xt_mode(self.xt_mode, func, enc)
        tiles = _split_tiles(sch, enc, xt_mode, tunable)
        chains = _schedule_chains(sch, enc, tiles.tile)
        _place_input(sch, func, enc, xt_mode, tiles)
        _annotate_and_decompose(sch, enc, tiles, chains)
        _schedule_codes(sch, enc, tiles.tile)
        return sch
