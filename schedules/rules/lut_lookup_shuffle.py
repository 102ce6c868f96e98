"""Schedule of the shuffle lookups (``lookup_dense_shuffle``, ``lookup_conv2d_shuffle``): one byte
shuffle per 64 lookups (AVX-512BW; two on AVX2, four ``tbl`` on NEON); for K = 32 / 64 tables one
``vpermb`` per 64 lookups where the target has AVX-512 VBMI (``schedules.intrin.lut_vbmi``).

Tiles the accumulator into (row tile x channel tile) blocks that run in parallel. Inside a tile
the uint16 word sums ``acc[n_tile, row_blocks, 2, 32]`` (``schedules.lut_shuffle_compute``)
are computed codebook by codebook: for each codebook ``c`` and channel ``n`` of the tile the
16-byte table column ``T[n, c, :]`` is loaded (and biased) once and shuffled with the codes of
every 64-row block of the tile (permuted once per block and codebook), each block's lookup
tensorized. The word sums take ``2 n_tile row_blocks`` vector registers: the default (8, 2)
is all 32 zmm (LLVM spills a few) and measured fastest at M = 128 (fewer, larger tiles: the
word sums need a 2 KiB workspace per tile, and each 8 x 8 epilogue tile is one transposition).

Epilogues. Dense ``Y[M, N]``: in 8-row x 8 (or 4)-channel steps, each decoding its rows into
registers and storing them transposed by shuffles (``TRANSPOSED_EPILOGUE`` intrinsics; LLVM
scatters otherwise), when the rows are whole 64-row blocks and C <= 256 (else a plain loop).
Conv ``Y[N, O, OH, OW]``: the tiles decode into the accumulator ``[O, M_pad]`` (int16 / int32),
and the NCHW output is written after all tiles, per (image, channel), positions contiguous
(LLVM vectorizes them), instead of an address ``m // (OH*OW), m % (OH*OW)`` per element.

Rows that are not a multiple of 64 are padded (by the compute) and the padded rows are never
stored. Any ``N`` runs on the shuffle: the channel tile is the largest divisor of ``N`` up to the
requested tile, a multiple of 4 where ``N`` has one (``_channel_tile``; a prime ``N`` runs with
a tile of 1 channel): a partial tile would put a predicate on the lookup block, and
``tensorize`` does not match a predicated block. Padding ``N`` to a multiple of 8 or 16 with zero
table columns measured no faster (one thread, AVX-512, load ~4: conv 24 / 40 / 10 channels at
M = 12800, C = 54: 346 / 457 / 77 us against 392 / 533 / 107 us at 32 / 48 / 16 channels; dense
N = 100 at M = 512: 29 us with 4-channel tiles against 30 us at N = 104).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule

from schedules.intrin.lut_shuffle import (
    ROWS_PER_CALL,
    TRANSPOSE_ROWS,
    TRANSPOSED_EPILOGUE,
)
from schedules.intrin.lut_vbmi import lookup_intrin_for_target
from schedules.intrin.registry import ensure
from schedules.lut_shuffle_compute import (
    ACC_BLOCK_PREFIX,
    DECODE_BLOCK,
    PAIR_SPAN,
    CODES_PAD_BLOCK,
    LOOKUP_DENSE_SHUFFLE,
    OUT_BLOCK,
)
from schedules.lut_conv_shuffle_compute import LOOKUP_CONV2D_SHUFFLE

from schedules.attrs import RELU_ATTR

from .lut_kind import has_block, lut_kind

# Default (channel tile, 64-row blocks per tile); the word sums of a tile take
# n_tile * row_blocks * 128 bytes. Measured at M = 128, C = 24 / 96, N = 384, one thread, loaded
# machine: (8, 2) 47-53 / 105 us, (8, 1) 56-57 / 115 us, (4, 2) 65-66 / 119 us.
DEFAULT_TILE = (8, 2)
# Channel tiles the tunable schedule samples from (those dividing N, multiples of 4 if any;
# 1 if none does).
N_TILE_CANDIDATES = (2, 4, 6, 8)
# What runs in parallel: every (row tile, channel tile) pair, or row tiles only (each thread
# then sweeps all channel tiles of its rows, reusing their codes from cache).
PARALLEL_AXES = ("tiles", "rows")


class LutLookupShuffleRule(ScheduleRule):
    """Schedules ``lookup_dense_shuffle`` PrimFuncs; None for any other function.

    ``n_tile`` / ``row_blocks`` override the channel tile and the number of 64-row blocks
    per tile (each rounded down to a divisor); ``tunable=True`` samples both with
    ``sample_categorical`` among divisors instead. ``parallel_axis`` is one of
    ``PARALLEL_AXES``. ``lookup_conv2d_shuffle`` (NCHW output) is tiled the same way over its
    code rows ``m = (n*OH + y)*OW + x``.

    Targets without a known shuffle (no AVX2/AVX-512BW/NEON in the target; for K = 32 / 64 no
    AVX-512 VBMI) get the same tiling without tensorize: correct, scalar, slow.
    """

    def __init__(self, n_tile: int | None = None, row_blocks: int | None = None,
                 parallel_axis: str = "tiles"):
        if parallel_axis not in PARALLEL_AXES:
            raise ValueError(f"parallel_axis must be one of {PARALLEL_AXES}, not {parallel_axis!r}")
        self.n_tile = n_tile
        self.row_blocks = row_blocks
        self.parallel_axis = parallel_axis

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        kind = lut_kind(func)
        if kind not in (LOOKUP_DENSE_SHUFFLE, LOOKUP_CONV2D_SHUFFLE):
            return None
        sch = s_tir.Schedule(func)
        acc_blocks = _acc_blocks(sch)
        # The word sums' last iteration variable is the centroid k < K.
        num_centroids = int(sch.get(acc_blocks[0]).iter_vars[-1].dom.extent)
        intrin = lookup_intrin_for_target(target, num_centroids)
        sums_shape = sch.get(acc_blocks[0]).writes[0].source.shape  # [N, M_pad / 64, 2, 32]
        out_features, total_blocks = int(sums_shape[0]), int(sums_shape[1])
        rows_pad = total_blocks * ROWS_PER_CALL

        out = sch.get_sblock(OUT_BLOCK)
        decode = sch.get_sblock(DECODE_BLOCK)
        if kind == LOOKUP_CONV2D_SHUFFLE:
            # The NCHW epilogue runs on its own, image rows contiguous (LLVM vectorizes them);
            # the tiles are those of the decoded accumulator [O, M_pad], whole 64-row blocks.
            batch_channel = sch.fuse(*sch.get_loops(out)[:2])
            sch.parallel(batch_channel)
            sch.fuse(*sch.get_loops(out)[1:])
            col, row = sch.get_loops(decode)
        else:
            row, col = sch.get_loops(out)
        rows = int(sch.get(row).extent)
        split = self._split_tiles(sch, row, col, out_features, total_blocks, tunable)
        row_outer, row_inner, col_outer, col_inner, n_tile, row_tile, width = split
        # NCHW rows are stored channel outer, positions inner (contiguous within an image).
        inner = (col_inner, row_inner) if kind == LOOKUP_CONV2D_SHUFFLE else (row_inner, col_inner)
        sch.reorder(row_outer, col_outer, *inner)
        if self.parallel_axis == "rows":
            sch.parallel(row_outer)
            tile, outer_loops = col_outer, 2
        else:
            tile, outer_loops = sch.fuse(row_outer, col_outer), 1
            sch.parallel(tile)

        relu = bool(int(func.attrs[RELU_ATTR])) if RELU_ATTR in func.attrs else False
        if (kind == LOOKUP_DENSE_SHUFFLE and intrin and width and rows == rows_pad
                and len(acc_blocks) == 1):
            _transposed_epilogue(sch, decode, row_inner, col_inner, width, relu)
        else:
            if kind != LOOKUP_CONV2D_SHUFFLE:
                sch.compute_at(decode, tile)
            # 16-row steps: the 8 low rows of 8 word pairs, then their 8 high rows.
            _, half, lane = sch.split(sch.get_loops(decode)[-1], [None, 2, PAIR_SPAN])
            sch.unroll(half)
            sch.vectorize(lane)
        for block in acc_blocks:
            _schedule_accumulator(sch, block, tile, outer_loops, n_tile, row_tile, intrin)

        if has_block(sch, CODES_PAD_BLOCK):
            pad = sch.get_sblock(CODES_PAD_BLOCK)
            sch.vectorize(sch.get_loops(pad)[-1])
        return sch

    def _split_tiles(self, sch: s_tir.Schedule, row, col, out_features: int, total_blocks: int,
                     tunable: bool) -> tuple:
        """Row and channel tiles: ``(row_outer, row_inner, col_outer, col_inner, n_tile, row_tile,
        width)``, ``width`` the channels of the transposed epilogue (None: not usable)."""
        if tunable:
            # Row and channel tiles are sampled among divisors (no predicate on the lookup).
            row_split = _sample_row_blocks(sch, total_blocks)
            # 1 only when nothing else divides N: a 1-channel tile loses its loop under
            # compute_at, which changes the trace's shape and breaks replay of other draws.
            # Multiples of 4 where N allows: every draw then takes the same 4-channel epilogue.
            candidates = ([n for n in N_TILE_CANDIDATES if n % 4 == 0 and out_features % n == 0]
                          or [n for n in N_TILE_CANDIDATES if out_features % n == 0] or [1])
            n_tile_var = sch.sample_categorical(
                candidates, [1.0 / len(candidates)] * len(candidates)
            )
            row_outer, row_inner = sch.split(row, [None, row_split])
            col_outer, col_inner = sch.split(col, [None, n_tile_var])
            n_tile, row_tile = int(sch.get(n_tile_var)), int(sch.get(row_split))
            width = 4 if all(n % 4 == 0 for n in candidates) else None
        else:
            default_n, default_blocks = DEFAULT_TILE
            row_blocks = _largest_divisor(total_blocks, self.row_blocks or default_blocks)
            row_tile = ROWS_PER_CALL * row_blocks
            n_tile = _channel_tile(out_features, self.n_tile or default_n)
            row_outer, row_inner = sch.split(row, [None, row_tile])
            col_outer, col_inner = sch.split(col, [None, n_tile])
            width = 8 if n_tile % 8 == 0 else 4 if n_tile % 4 == 0 else None
        return row_outer, row_inner, col_outer, col_inner, n_tile, row_tile, width


def _transposed_epilogue(sch: s_tir.Schedule, decode, row_inner, col_inner, width: int, relu: bool):
    """Whole 8-row x width-channel tiles, transposed in registers (not scattered), after
    decoding the tile's 8 rows (n_tile x 8 int16 on the stack: no workspace call)."""
    row_step, row_lane = sch.split(row_inner, [None, TRANSPOSE_ROWS])
    col_step, col_lane = sch.split(col_inner, [None, width])
    sch.reorder(row_step, col_step, row_lane, col_lane)
    sch.compute_at(decode, row_step)
    sch.vectorize(sch.get_loops(decode)[-1])
    sch.tensorize(row_lane, ensure(TRANSPOSED_EPILOGUE[(width, relu)]))


def _schedule_accumulator(sch: s_tir.Schedule, block, tile, outer_loops: int, n_tile: int,
                          row_tile: int, intrin) -> None:
    """One codebook chunk's word sums under ``tile``: codebooks outermost, the shuffle
    intrinsic (if the target has one) on the word-sum loop."""
    sch.compute_at(block, tile)
    chan, row_block, word_sum, word, codebook = _acc_loops(
        sch, sch.get_loops(block)[outer_loops:], n_tile, row_tile // ROWS_PER_CALL
    )
    sch.reorder(*[loop for loop in (codebook, chan, row_block) if loop is not None],
                word_sum, word)
    # The word sums are zeroed right outside the codebook loop; without one, right
    # outside the tile's first loop, which gives the same init loops.
    first = next(loop for loop in (codebook, chan, row_block, word_sum) if loop is not None)
    init = sch.decompose_reduction(block, first)
    sch.vectorize(sch.get_loops(init)[-1])
    if intrin:
        sch.tensorize(word_sum, ensure(intrin))
    for loop in (chan, row_block):
        if loop is not None:
            sch.unroll(loop)


def _acc_loops(sch: s_tir.Schedule, loops: list, n_tile: int, row_blocks: int):
    """``(channel, row block, word sum, word, codebook)`` loops of an accumulator block after
    compute_at (``loops`` below the tile, in the compute's order n, b, s, w, c, k): compute_at
    leaves out the loops of extent 1 (a 1-channel tile, a 1-block row tile, a 1-codebook
    chunk), which are then None."""
    loops = list(loops)[:-1]  # without the centroid loop
    extents = [_const_extent(sch, loop) for loop in loops]
    # The word-sum loop (extent 2) is followed by the word loop (32): find it from the end.
    at = max(i for i in range(len(loops) - 1) if extents[i] == 2 and extents[i + 1] == 32)
    word_sum, word = loops[at], loops[at + 1]
    codebook = loops[at + 2] if at + 2 < len(loops) else None
    outer = loops[:at]
    chan = outer.pop(0) if n_tile > 1 and outer else None
    row_block = outer.pop(0) if row_blocks > 1 and outer else None
    return chan, row_block, word_sum, word, codebook


def _sample_row_blocks(sch: s_tir.Schedule, total_blocks: int):
    """Rows per tile, ``64 b``, with ``b`` in {2, 4} dividing the padded row blocks (1 only when
    neither does: a 1-block tile loses its loop under compute_at, which changes the trace's
    shape and breaks replay of other draws), sampled with ``sample_categorical``.
    (``sample_perfect_tile`` cannot be asked for a multiple of 64, and the compute_at region
    must divide the padded rows.)"""
    divisors = [d for d in (2, 4) if total_blocks % d == 0] or [1]
    return sch.sample_categorical(
        [ROWS_PER_CALL * d for d in divisors], [1.0 / len(divisors)] * len(divisors)
    )


def _acc_blocks(sch: s_tir.Schedule) -> list:
    blocks = []
    index = 0
    while has_block(sch, f"{ACC_BLOCK_PREFIX}{index}"):
        blocks.append(sch.get_sblock(f"{ACC_BLOCK_PREFIX}{index}"))
        index += 1
    return blocks


def _const_extent(sch: s_tir.Schedule, loop) -> int | None:
    """The loop's extent, or None when it is not a constant (a partial row tile's block loop)."""
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def _channel_tile(out_features: int, limit: int) -> int:
    """The channel tile: the largest divisor of ``N`` up to ``limit``, a multiple of 4 if ``N``
    has one (the transposed dense epilogue needs 4 or 8 channels). Measured, one thread, AVX-512,
    M = 512, C = 50, load ~4: N = 100 with a 4-channel tile 29 us, with 5 channels 37 us (plain
    epilogue), padded to N = 104 (8 channels) 30 us."""
    divisors = [d for d in range(1, max(1, min(out_features, limit)) + 1) if out_features % d == 0]
    return max(divisors, key=lambda d: (d % 4 == 0, d))


def _largest_divisor(total: int, limit: int) -> int:
    """The largest divisor of ``total`` not above ``limit``."""
    return max(d for d in range(1, max(1, min(total, limit)) + 1) if total % d == 0)

