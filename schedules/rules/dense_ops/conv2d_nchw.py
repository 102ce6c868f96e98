"""Register-blocked CPU schedule for conv2d with NCHW data (packed, OIHW or HWIO weight; groups
on a packed weight; fused pad, bias add, relu)."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import collect_vars_used_in_prim_expr
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from ._loops import MIN_PARALLEL_WORK, attempt, is_cpu_target, largest_divisor, prod
from ._loops import parallel_vectorize, vector_lanes
from ._tiling import MAX_ACC_VECTORS, index_vars, inline_epilogue, operand_reads, same_var
from ._tiling import split_main_block

# Most output positions per register tile (each costs one broadcast per reduction step).
MAX_SPATIAL_TILE = 14
# A tile narrower than this many columns (an awkward width such as 111 = 3 x 37) takes several rows.
MIN_TILE_COLUMNS = 4
AVX2_REGISTERS = 16


def _is_block_index(expr, var, block: int, op) -> bool:
    """True when ``expr`` is ``op(var, block)`` (``FloorDiv``/``FloorMod`` of a packed weight index)."""
    return (isinstance(expr, op) and same_var(expr.a, var) and isinstance(expr.b, tirx.IntImm)
            and int(expr.b) == block)


def _packed_weight(weight, f, rc, ry, rx) -> bool:
    """True for a weight read ``w[f // fb, rc, ry, rx, f % fb]`` (the layout of
    relay_passes.conv2d_weight_packed)."""
    mins = [r.min for r in weight.region]
    if len(mins) != 5 or any(not (isinstance(r.extent, tirx.IntImm) and int(r.extent) == 1)
                             for r in weight.region):
        return False
    block = int(weight.source.shape[4])
    return (_is_block_index(mins[0], f, block, tirx.FloorDiv) and _is_block_index(mins[4], f, block, tirx.FloorMod)
            and all(same_var(a, b) for a, b in zip(mins[1:4], (rc, ry, rx))))


def _input_channel(expr, rc, f) -> bool:
    """True for the input channel index of a conv: ``rc``, or ``group(f) + rc`` (a grouped conv
    whose group offset depends on the output channel only)."""
    if same_var(expr, rc):
        return True
    return (isinstance(expr, tirx.Add) and same_var(expr.b, rc)
            and all(v.same_as(f) for v in collect_vars_used_in_prim_expr(expr.a)))


def _conv_operands(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV):
    """(data read index, weight read index, weight layout "OIHW"/"HWIO"/"packed") of a conv2d
    NCHW block ``out[n, f, y, x] += data[n, rc, ..., ...] * weight[...]``, or None."""
    stmt = sch.get(block)
    if len(stmt.iter_vars) != 7:
        return None
    n, f, y, x, rc, ry, rx = [iv.var for iv in stmt.iter_vars]
    reads, out = operand_reads(sch, block)
    out_idx = index_vars(out)
    if len(reads) != 2 or not out_idx or len(out_idx) != 4:
        return None
    if not all(same_var(a, b) for a, b in zip(out_idx, (n, f, y, x))):
        return None
    layouts = {"OIHW": (f, rc, ry, rx), "HWIO": (ry, rx, rc, f)}
    for d_pos, w_pos in ((0, 1), (1, 0)):
        data, weight = reads[d_pos], reads[w_pos]
        d_mins = [r.min for r in data.region]
        if len(d_mins) != 4 or not (same_var(d_mins[0], n) and _input_channel(d_mins[1], rc, f)):
            continue
        w_idx = index_vars(weight)
        # groups only on a packed weight, whose channel tile never straddles two groups
        name = "packed" if _packed_weight(weight, f, rc, ry, rx) else None
        for layout, want in layouts.items():
            if (w_idx and len(w_idx) == 4 and all(same_var(a, b) for a, b in zip(w_idx, want))
                    and same_var(d_mins[1], rc)):
                name = layout
        if name is not None:
            read_pos = [i for i, r in enumerate(stmt.reads) if r.source.same_as(data.source)]
            w_read_pos = [i for i, r in enumerate(stmt.reads) if r.source.same_as(weight.source)]
            return read_pos[0], w_read_pos[0], name
    return None


def accumulator_budget(lanes: int) -> int:
    """Accumulator vectors a micro-kernel may keep in registers: 24 of AVX-512's 32, 12 of AVX2's 16."""
    return MAX_ACC_VECTORS if lanes >= 16 else MAX_ACC_VECTORS // 2


def positions_cap(lanes: int, n_vec: int) -> int:
    """Output positions a tile of ``n_vec`` weight vectors per step may hold: ``accumulator_budget / n_vec``
    (AVX-512), or with AVX2's 16 registers all that the n_vec weight vectors and one broadcast leave (14
    positions of one vector: SqueezeNet's 13-wide rows take whole, where a 12 cap left 1-position tiles)."""
    if lanes >= 16:
        return max(1, accumulator_budget(lanes) // n_vec)
    return max(1, (AVX2_REGISTERS - 1 - n_vec) // n_vec)


def padded_channels(n_f: int, lanes: int) -> int:
    """Output channels rounded up to whole vectors (``n_f`` itself when it is already, or when it is
    under half a vector). Rounding up may nearly double the work (17 -> 32 channels), but a tile
    that is not whole vectors measured 4-5x slower (Conv2d(24, 40, 3, groups=2) at batch 32,
    16x16: 3.2 ms with 20-channel tiles, 0.74 ms with 32)."""
    rounded = -(-n_f // lanes) * lanes
    return rounded if 2 * n_f >= lanes else n_f


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def pick_conv_tiles(n_f: int, n_y: int, n_x: int, lanes: int, fr: int | None = None) -> tuple[int, int, int]:
    """(channel tile fr, row tile yr, column tile xr): fr output channels are one or two vectors;
    yr x xr output positions share each weight vector load (yr > 1 only when xr covers a row or
    is narrower than ``MIN_TILE_COLUMNS``: 2-D tiles measured slower otherwise).

    Each reduction step loads ``ceil(fr / lanes)`` weight vectors and broadcasts one input per
    position for ``ceil(fr / lanes) * yr * xr`` FMAs: the tile maximizes lane use x the FMA share
    of the step x (at least 8 independent accumulators, to hide the FMA latency), then its size.
    """
    if fr is not None:
        blocks = [fr]
    else:
        blocks = [b for b in (2 * lanes, lanes) if n_f % b == 0] or [largest_divisor(n_f, 2 * lanes)]
    best, best_key = None, None
    for block in blocks:
        n_vec = -(-block // lanes)
        cap = positions_cap(lanes, n_vec)
        for xr in _divisors(n_x, min(cap, MAX_SPATIAL_TILE)):
            for yr in (_divisors(n_y, cap // xr) if xr == n_x or xr < MIN_TILE_COLUMNS else [1]):
                acc = n_vec * xr * yr
                score = (block / (n_vec * lanes)) * min(1.0, acc / (n_vec + xr * yr)) * min(1.0, acc / 8)
                key = (round(score, 3), acc, block)
                if best_key is None or key > best_key:
                    best, best_key = (block, yr, xr), key
    return best


class Conv2dNCHW(ScheduleRule):
    """Direct conv2d with NCHW data and output, vectorized over output channels.

    Loop nest: [pad, once] -> parallel(n, f_outer, y_outer, x_outer) -> rc, ry, rx ->
    unroll(y_inner, x_inner) -> vector(f_inner). The (y_inner x x_inner) x f_inner
    accumulator tile stays in registers (its local buffer is laid out channel-last); each
    step broadcasts one input value per position against one weight vector. The weight is
    best packed [f_outer, rc, ry, rx, f_inner] at compile time (relay_passes.conv2d_weight_packed,
    read as one contiguous stream per tile); an OIHW weight is repacked so per call, an HWIO
    weight (relay_passes.conv2d_weight_hwio) is read in place. The zero-padded input is
    materialized once per call, and the epilogue (bias, relu) runs at write-back.
    """

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool):
        if not isinstance(func, tirx.PrimFunc) or not is_cpu_target(target):
            return None
        sch = s_tir.Schedule(func)
        keep = []
        split = split_main_block(sch, "SSSSRRR", keep=_keep_data_producer(keep))
        if split is None:
            return None
        info, epilogue = split
        block = info.block_rv
        found = _conv_operands(sch, block)
        if found is None:
            return None
        _, w_pos, w_layout = found
        dom = info.dom()
        lanes = vector_lanes(target, 32)
        packed_block = int(sch.get(block).reads[w_pos].source.shape[4]) if w_layout == "packed" else None
        if packed_block is not None and dom[1] % packed_block:
            return None
        fr, yr, xr = pick_conv_tiles(dom[1], dom[2], dom[3], lanes, fr=packed_block)
        work = prod(dom)

        if w_layout == "OIHW":
            packed = sch.cache_read(block, w_pos, "global")
            sch.transform_layout(
                packed, ("write", 0), lambda o, i, h, w: (o // fr, i, h, w, o % fr)
            )
            parallel_vectorize(sch, sch.get_loops(packed)[:1], lanes, work=work, vectorize=False)

        nn, f, y, x, rc, ry, rx = sch.get_loops(block)
        fo, fi = sch.split(f, factors=[None, fr])
        yo, yi = sch.split(y, factors=[None, yr])
        xo, xi = sch.split(x, factors=[None, xr])
        sch.reorder(nn, fo, yo, xo, rc, ry, rx, yi, xi, fi)

        wb = sch.cache_write(block, 0, "local")
        sch.transform_layout(block, ("write", 0), lambda a, b, c, d: (a, c, d, b))
        leftover = inline_epilogue(sch, epilogue)
        outer = sch.fuse(nn, fo, yo, xo)
        sch.reverse_compute_at(wb, outer, preserve_unit_loops=True)
        for pad in keep:  # once per call: a pad tile per register tile would repeat it F / fr times
            parallel_vectorize(sch, sch.get_loops(pad), lanes, work=work)
        if work >= MIN_PARALLEL_WORK and sch.get(outer).extent.value > 1:
            sch.parallel(outer)
        sch.unroll(yi)
        sch.unroll(xi)
        sch.vectorize(fi)
        wb_loops = sch.get_loops(wb)
        attempt(sch, lambda s: s.vectorize(wb_loops[-1]))
        init = sch.decompose_reduction(block, rc)
        attempt(sch, lambda s: s.vectorize(sch.get_loops(init)[-1]))
        for epi in leftover:
            parallel_vectorize(sch, sch.get_loops(epi), lanes)
        return sch


def _keep_data_producer(kept: list):
    """A ``split_main_block`` keep-callback: keep (do not inline) the producer of the conv's
    data operand -- the pad block -- and record it in ``kept``."""

    def keep(sch: s_tir.Schedule, main, producer) -> bool:
        found = _conv_operands(sch, main)
        if found is None:
            return False
        buf = sch.get(main).reads[found[0]].source
        if any(w.source.same_as(buf) for w in sch.get(producer).writes):
            kept.append(producer)
            return True
        return False

    return keep
