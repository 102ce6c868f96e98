"""Schedule of the shuffle lookups (``lookup_dense_shuffle``, ``lookup_conv2d_shuffle``): one byte
shuffle per 16–64 lookups.

Tiles ``Y[M, N]`` into (row tile x channel tile) blocks that run in parallel. Inside a tile the
int16 accumulators ``acc16[n_tile, m_tile]`` are computed codebook by codebook: for each
codebook ``c`` and channel ``n`` of the tile the 16-byte table column ``T[n, c, :]`` is
loaded once and shuffled with the codes of every ``L``-row block of the tile (``L`` = 64 on
AVX-512BW, 32 on AVX2, 16 on NEON), each shuffle tensorized into ``vpshufb``/``tbl``. The
epilogue (int32 sum of the int16 chunks, ``* scale + bias``, ReLU) runs on the tile right after.

Rows that are not a multiple of ``L`` are padded (by the compute, to a multiple of 64) and the
padded rows are never stored. The channel tile is the largest divisor of ``N`` up to the
requested tile (a prime ``N`` runs with a tile of 1 channel): a partial tile
would put a predicate on the lookup block, and ``tensorize`` does not match a predicated block.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule

from schedules.intrin.lut_shuffle import LUT16_SHUFFLE_LANES, shuffle_intrin_for_target
from schedules.lut_shuffle_compute import (
    ACC_BLOCK_PREFIX,
    CODES_PAD_BLOCK,
    LOOKUP_DENSE_SHUFFLE,
    OUT_BLOCK,
)
from schedules.lut_conv_shuffle_compute import LOOKUP_CONV2D_SHUFFLE

from .lut_kind import has_block, lut_kind

# Default (channel tile, L-row blocks per tile) per lane count. The accumulators of a tile take
# n_tile * row_blocks * L * 2 bytes; (8, 2) on AVX-512 is 32 zmm worth, and measured fastest here
# at M = 128 (59.8 us vs 72-77 us for (4, 2) on 128 x 24 x 384, one thread) because the
# epilogue's transposed store gets a wider channel run.
DEFAULT_TILES = {64: (8, 2), 32: (8, 2), 16: (4, 2)}
# What runs in parallel: every (row tile, channel tile) pair, or row tiles only (each thread
# then sweeps all channel tiles of its rows, reusing their codes from cache).
PARALLEL_AXES = ("tiles", "rows")


class LutLookupShuffleRule(ScheduleRule):
    """Schedules ``lookup_dense_shuffle`` PrimFuncs; None for any other function.

    ``n_tile`` / ``row_blocks`` override the channel tile and the number of ``L``-row blocks
    per tile (each rounded down to a divisor); ``tunable=True`` samples both with
    ``sample_categorical`` among divisors instead. ``parallel_axis`` is one of
    ``PARALLEL_AXES``. ``lookup_conv2d_shuffle`` (NCHW output) is scheduled the same way over
    its code rows ``m = (n*OH + y)*OW + x``, storing positions innermost.

    Targets without a known shuffle (no AVX2/AVX-512BW/NEON in the target) get the same tiling
    without tensorize: correct, scalar, slow.
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
        intrin = shuffle_intrin_for_target(target)
        sch = s_tir.Schedule(func)
        acc_blocks = _acc_blocks(sch)
        rows_pad = int(sch.get(acc_blocks[0]).writes[0].source.shape[1])
        out_features = int(sch.get(acc_blocks[0]).writes[0].source.shape[0])
        lanes = LUT16_SHUFFLE_LANES[intrin] if intrin else 16
        if rows_pad % lanes:
            return None

        default_n, default_blocks = DEFAULT_TILES[lanes]
        n_tile = self.n_tile or default_n
        row_blocks = self.row_blocks or default_blocks
        total_blocks = rows_pad // lanes
        out = sch.get_sblock(OUT_BLOCK)
        if kind == LOOKUP_CONV2D_SHUFFLE:
            # NCHW output iterated as (code row m = (n*OH + y)*OW + x, channel), as the dense
            # lookup's; a block layout (not a loop fuse) keeps the accumulator's region affine.
            _, _, out_h, out_w = (int(d) for d in sch.get(out).writes[0].source.shape)
            sch.transform_block_layout(
                out, lambda n, o, y, x: ((n * out_h + y) * out_w + x, o)
            )
        row, col = sch.get_loops(out)
        if tunable:
            # Row and channel tiles are sampled among divisors (no predicate on the lookup).
            row_split = _sample_row_blocks(sch, total_blocks, lanes)
            # 1 only when nothing else divides N: a 1-channel tile loses its loop under
            # compute_at, which changes the trace's shape and breaks replay of other draws.
            candidates = [n for n in (2, 4, 8) if out_features % n == 0] or [1]
            n_tile_var = sch.sample_categorical(
                candidates, [1.0 / len(candidates)] * len(candidates)
            )
            row_outer, row_inner = sch.split(row, [None, row_split])
            col_outer, col_inner = sch.split(col, [None, n_tile_var])
        else:
            row_blocks = _largest_divisor(total_blocks, row_blocks)
            row_outer, row_inner = sch.split(row, [None, lanes * row_blocks])
            col_outer, col_inner = sch.split(col, [None, _largest_divisor(out_features, n_tile)])
        # NCHW rows are stored channel outer, positions inner (contiguous within an image).
        inner = (col_inner, row_inner) if kind == LOOKUP_CONV2D_SHUFFLE else (row_inner, col_inner)
        sch.reorder(row_outer, col_outer, *inner)
        if self.parallel_axis == "rows":
            sch.parallel(row_outer)
            tile, outer_loops = col_outer, 2
        else:
            tile, outer_loops = sch.fuse(row_outer, col_outer), 1
            sch.parallel(tile)

        for block in acc_blocks:
            # A chunk of one codebook (C = 1, e.g. a 1-channel 3x3 stem conv) has a codebook axis
            # of extent 1, and compute_at drops its loop (as it does the channel loop of a
            # 1-channel tile): the loops are then (channel, row, centroid), not four.
            one_codebook = int(sch.get(block).iter_vars[2].dom.extent) == 1
            sch.compute_at(block, tile)
            inner = sch.get_loops(block)[outer_loops:]
            if one_codebook:
                chan, (row_in, centroid) = (inner[0], inner[1:]) if len(inner) == 3 else (None, inner)
                codebook = None
            else:
                # compute_at leaves out the channel loop when the tile has one channel.
                chan, (row_in, codebook, centroid) = (inner[0], inner[1:]) if len(inner) == 4 else (None, inner)
            row_block, row_lane = sch.split(row_in, [None, lanes])
            sch.reorder(*[loop for loop in (codebook, chan) if loop is not None], row_block, row_lane, centroid)
            # The accumulators are zeroed right outside the codebook loop; without one, right
            # outside the tile's channel (or row block) loop, which gives the same init loops.
            init = sch.decompose_reduction(
                block, codebook if codebook is not None else (chan if chan is not None else row_block)
            )
            sch.vectorize(sch.get_loops(init)[-1])
            if intrin:
                sch.tensorize(row_lane, intrin)
            if chan is not None:
                sch.unroll(chan)
            sch.unroll(row_block)

        if has_block(sch, CODES_PAD_BLOCK):
            pad = sch.get_sblock(CODES_PAD_BLOCK)
            sch.vectorize(sch.get_loops(pad)[-1])
        return sch


def _sample_row_blocks(sch: s_tir.Schedule, total_blocks: int, lanes: int):
    """Rows per tile, ``lanes * b``, with ``b`` in {1, 2, 4} dividing the padded row blocks,
    sampled with ``sample_categorical``. (``sample_perfect_tile`` cannot be asked for a
    multiple of ``lanes``, and the compute_at region must divide the padded rows.)"""
    divisors = [d for d in (1, 2, 4) if total_blocks % d == 0]
    return sch.sample_categorical(
        [lanes * d for d in divisors], [1.0 / len(divisors)] * len(divisors)
    )


def _acc_blocks(sch: s_tir.Schedule) -> list:
    blocks = []
    index = 0
    while has_block(sch, f"{ACC_BLOCK_PREFIX}{index}"):
        blocks.append(sch.get_sblock(f"{ACC_BLOCK_PREFIX}{index}"))
        index += 1
    return blocks


def _largest_divisor(total: int, limit: int) -> int:
    """The largest divisor of ``total`` not above ``limit``."""
    return max(d for d in range(1, max(1, min(total, limit)) + 1) if total % d == 0)

