"""Default schedule of the encode kernels: per row, all codebooks at once, vectorized over codebooks.

For one row (a dense row, or one output pixel of a conv), the ``[K, C]`` distances are
accumulated over the sub-vector positions ``v`` with the ``C`` codebooks in the vector lanes
(one input vector times one centroid vector per ``(v, k)``), then the argmin over ``K`` runs
elementwise across the codebook lanes and the ``C`` codes are stored contiguously. The input
is first copied channel-last (``[M, V, C]`` for dense, NHWC for conv) and the centroids and
norms ``[.., K, C]``, so every vector access is contiguous; rows run in parallel. A conv whose
sub-vectors span input channels or taps (``V != kh*kw``, ``kh*kw > 1``) instead copies each output position's
window ``[V, C]`` under the row loop (``lut_compute.WINDOW_BLOCK``): read through the NHWC copy,
its codebook lanes were scattered elements (one thread, load ~6: 24-channel 3x3 conv at batch
32, 20x20, V = 4: 165 ms before, 67 ms now, 38 ms at V = 9; 24-channel 3x3 at 8x8, batch 8,
V = 8: 4.7 / 2.2 ms). Still 50-100x slower than the row encode of the shuffle path. Each
distance is summed over ``v`` in the same order as before, so the codes are bit-identical.

If that schedule does not apply, the previous one is used: per (row, codebook), the K
distances vectorized over the centroids, then a scalar argmin.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule

from schedules.attrs import LutKind
from schedules.lut_compute import WINDOW_BLOCK

from .dense_ops._loops import prod
from .lut_kind import has_block, lut_kind, vector_lanes

# Unroll the centroid loop (K accumulator vectors kept in registers) up to this K.
MAX_UNROLL_CENTROIDS = 32
# Copy the input channel-last in parallel from this many elements on.
MIN_PARALLEL_COPY = 16384
# Vectorize the codebook loop whole up to this many codebooks, else split it.
MAX_CODEBOOK_VECTOR = 64


def _read_index(sch: s_tir.Schedule, block, buffer_name: str) -> int:
    for i, region in enumerate(sch.get(block).reads):
        if region.source.name == buffer_name:
            return i
    raise ValueError(f"{buffer_name} not read")


def _codebook_major(func: tirx.PrimFunc, kind: str, lanes: int) -> s_tir.Schedule:
    sch = s_tir.Schedule(func)
    dot = sch.get_sblock("encode_dot")
    argmin = sch.get_sblock("encode_distance_red_temp")
    red = sch.get_sblock("encode_distance_red")
    # Buffer names as lut_kernels.py declares them.
    data_name, cent_name, norm_name = "data", "centroids", "centroid_norms"
    cent_region = sch.get(dot).reads[_read_index(sch, dot, cent_name)]
    num_codebooks, num_centroids, sub_len = (int(d) for d in cent_region.source.shape)

    # Channel-last copies of the input, centroids and norms (computed once per call); a conv
    # whose sub-vectors span channels / taps copies each position's window [V, C] instead.
    window = sch.get_sblock(WINDOW_BLOCK) if has_block(sch, WINDOW_BLOCK) else None
    if window is not None:
        data_c = window
        sch.transform_layout(window, ("write", 0), lambda n, h, w, c, v: (n, h, w, v, c))
    else:
        data_c = sch.cache_read(dot, _read_index(sch, dot, data_name), "global")
        if kind == LutKind.ENCODE_DENSE:
            sch.transform_layout(data_c, ("write", 0), lambda m, d: (m, d % sub_len, d // sub_len))
        else:
            sch.transform_layout(data_c, ("write", 0), lambda n, c, h, w: (n, h, w, c))
    cent_c = sch.cache_read(dot, _read_index(sch, dot, cent_name), "global")
    sch.transform_layout(cent_c, ("write", 0), lambda c, k, v: (v, k, c))
    sch.compute_inline(sch.get_sblock("encode_distance"))
    norm_c = sch.cache_read(argmin, _read_index(sch, argmin, norm_name), "global")
    sch.transform_layout(norm_c, ("write", 0), lambda c, k: (k, c))
    sch.reverse_compute_inline(sch.get_sblock("encode_codes"))
    # The per-row [C, K] dot products, laid out [K, C].
    sch.transform_layout(dot, ("write", 0), lambda *i: (*i[:-2], i[-1], i[-2]))

    loops = sch.get_loops(data_c)
    if (window is None and len(loops) > 1
            and prod(int(sch.get(lp).extent) for lp in loops) >= MIN_PARALLEL_COPY):
        sch.parallel(loops[0])

    *prefix, codebook, centroid = sch.get_loops(argmin)
    row = sch.fuse(*prefix)
    sch.reorder(centroid, codebook)
    sch.parallel(row)
    sch.compute_at(dot, row)
    sch.reverse_compute_at(red, row)
    sch.set_scope(dot, 0, "local")
    if window is not None:
        sch.compute_at(window, row)
        sch.set_scope(window, 0, "local")

    d_loops = sch.get_loops(dot)[1:]  # (codebook, centroid[, sub-vector])
    d_cb, d_k = d_loops[0], d_loops[1]
    d_v = d_loops[2] if len(d_loops) == 3 else None
    # Codebooks in chunks of one vector register (K accumulators per chunk), chunk outermost.
    chunk = lanes if num_codebooks > lanes and num_codebooks % lanes == 0 else num_codebooks
    if chunk < num_codebooks:
        d_cbo, d_cb = sch.split(d_cb, [None, chunk])
        a_cbo, codebook = sch.split(codebook, [None, chunk])
        sch.reorder(a_cbo, centroid, codebook)
        sch.reorder(d_cbo, *([d_v] if d_v is not None else []), d_k, d_cb)
    else:
        sch.reorder(*([d_v] if d_v is not None else []), d_k, d_cb)
    # Annotate first: vectorize needs the blocks to still be reduction blocks.
    _vectorize_codebooks(sch, d_cb, chunk)
    _vectorize_codebooks(sch, codebook, chunk)
    if num_centroids <= MAX_UNROLL_CENTROIDS:
        sch.unroll(d_k)
        sch.unroll(centroid)
    if d_v is not None:
        dot_init = sch.decompose_reduction(dot, d_v)
        _vectorize_codebooks(sch, sch.get_loops(dot_init)[-1], chunk)
    init = sch.decompose_reduction(argmin, centroid)
    _vectorize_codebooks(sch, sch.get_loops(init)[-1], chunk)
    _vectorize_codebooks(sch, sch.get_loops(red)[-1], num_codebooks)
    return sch


def _vectorize_codebooks(sch: s_tir.Schedule, loop, num_codebooks: int) -> None:
    if num_codebooks <= MAX_CODEBOOK_VECTOR:
        sch.vectorize(loop)
        return
    for factor in range(MAX_CODEBOOK_VECTOR, 1, -1):
        if num_codebooks % factor == 0:
            _, inner = sch.split(loop, [None, factor])
            sch.vectorize(inner)
            return


def _centroid_major(func: tirx.PrimFunc) -> s_tir.Schedule:
    """The previous schedule: per (row, codebook) K distances vectorized over K."""
    sch = s_tir.Schedule(func)
    sch.compute_inline(sch.get_sblock("encode_distance"))
    sch.reverse_compute_inline(sch.get_sblock("encode_codes"))
    argmin = sch.get_sblock("encode_distance_red_temp")
    *prefix, codebook, _ = sch.get_loops(argmin)
    sch.parallel(sch.fuse(*prefix))
    sch.reverse_compute_at(sch.get_sblock("encode_distance_red"), codebook)
    dot = sch.get_sblock("encode_dot")
    sch.compute_at(dot, codebook)
    if has_block(sch, WINDOW_BLOCK):  # the codebook's V window elements, right before its dots
        sch.compute_at(sch.get_sblock(WINDOW_BLOCK), codebook)
    inner = sch.get_loops(dot)[2:]  # below the fused row loop and the codebook loop
    if len(inner) == 2:  # (centroid, sub-vector); V = 1 leaves no sub-vector loop
        centroid, sub = inner
        sch.reorder(sub, centroid)
        sch.vectorize(centroid)
        sch.decompose_reduction(dot, sub)
    else:
        sch.vectorize(inner[-1])
    return sch


class LutEncodeRule(ScheduleRule):
    """Schedules ``encode_dense`` / ``encode_conv2d`` PrimFuncs; None for anything else."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        kind = lut_kind(func)
        if kind not in (LutKind.ENCODE_DENSE, LutKind.ENCODE_CONV2D):
            return None
        try:
            return _codebook_major(func, kind, vector_lanes(target, 32))
        except Exception:  # pylint: disable=broad-except
            return _centroid_major(func)
