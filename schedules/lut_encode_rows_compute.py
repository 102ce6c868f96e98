"""TE compute and PrimFunc builder of the row-vectorized dense encode, codes written ``[C, M]``.

Same math as ``lut_compute.encode_dense`` (``code = argmin_k ||P[c,k]||^2 - 2 x . P[c,k]``,
first index wins a tie, uint8), laid out for a schedule that puts *rows* in the vector lanes
and writes the codes codebook-major, as the shuffle lookup (``lut_shuffle_compute``) reads
them:

* ``encode_rows_xt [D, M_pad]`` — the input transposed, rows padded to a multiple of
  ``ROW_ALIGN`` by repeating the last row (padded rows are computed and never stored); the
  schedule inlines it (strided reads of ``x``) or copies one tile of it. ``encode_rows`` takes
  any ``value_at(m, d)`` for it: a conv's windows (``lut_conv_shuffle_compute``) use the same
  blocks and schedule;
* ``encode_rows_dot [C, K, M_pad]`` — ``sum_v xt[cV + v, m] * P[c, k, v]``, summed over ``v``
  in ascending order (the schedule keeps that order: the result is deterministic);
* ``encode_rows_argmin_partial [C, J, M_pad]`` — ``(index, distance)`` reduced over the
  centroids of chain ``j`` (``k`` in ``[j K/J, (j+1) K/J)``, ascending), with ``distance =
  PN[c, k] - 2 * dot``; the combiner takes the new element only if its distance is strictly
  smaller, so the first index of a tie wins;
* ``encode_rows_argmin [C, M_pad]`` — the ``J`` chains reduced in ascending ``j`` with the same
  combiner: every index of chain ``j`` is below chain ``j+1``'s, so the first index still wins;
* ``encode_rows_codes [C, M]`` — the index as uint8 (``m < M`` only).

``J`` independent chains (``argmin_chains``) let the serial compare/select chains of a tile
overlap. The schedule (``schedules.rules.lut_encode_rows``) keeps the per-centroid accumulators
and the running argmin in vector registers.
"""

from __future__ import annotations

from tvm import te, tirx

from .attrs import LutKind
from .lut_compute import CODE_DTYPE, to_prim_func

ENCODE_DENSE_ROWS = LutKind.ENCODE_DENSE_ROWS

# Rows are padded to a multiple of this (a multiple of 4, 8 and 16 float32 lanes).
ROW_ALIGN = 16

XT_BLOCK = "encode_rows_xt"
DOT_BLOCK = "encode_rows_dot"
PARTIAL_BLOCK = "encode_rows_argmin_partial"
ARGMIN_BLOCK = "encode_rows_argmin"
CODES_BLOCK = "encode_rows_codes"

# Independent argmin chains per tile (the running argmin is a serial compare/select chain;
# several chains over consecutive ranges of k overlap their latency).
# Two: within noise of four and no slower than one (benchmarks/encode_speed.py --variants).
ARGMIN_CHAINS = 2


def argmin_chains(num_centroids: int) -> int:
    """Chains for ``K`` centroids: ``ARGMIN_CHAINS`` if it divides K (>= 2 per chain), else 1."""
    if num_centroids % ARGMIN_CHAINS == 0 and num_centroids >= 2 * ARGMIN_CHAINS:
        return ARGMIN_CHAINS
    return 1


def padded_rows(rows: int, align: int = ROW_ALIGN) -> int:
    """``rows`` rounded up to a multiple of ``align``."""
    return -(-rows // align) * align


def shifted_last_tile(rows: int, align: int = ROW_ALIGN) -> bool:
    """Whether the last row tile is moved back to end at row M (M not a multiple of ``align``,
    more than one tile); its codes are then written by a pass of their own."""
    return rows % align != 0 and rows > align


def _first_argmin_reducer():
    """``(index, value)`` reducer: the right-hand element wins only if strictly smaller.

    TIR folds ``acc = combine(acc, element)``; visited in ascending index order this keeps the
    first index of a tie (the reference's ``np.argmin``). Fewer vector operations than topi's
    argmin (which also compares indices on equal values).
    """

    def combine(lhs, rhs):
        take = rhs[1] < lhs[1]
        return tirx.Select(take, rhs[0], lhs[0]), tirx.Select(take, rhs[1], lhs[1])

    def identity(index_dtype, value_dtype):
        return tirx.const(0, index_dtype), tirx.max_value(value_dtype)

    return te.comm_reducer(combine, identity, name="first_argmin")


def encode_dense_rows(
    data: te.Tensor,
    centroids: te.Tensor,
    norms: te.Tensor,
    row_align: int = ROW_ALIGN,
    num_chains: int | None = None,
) -> te.Tensor:
    """Codes ``[C, M]`` (uint8, codebook-major) of the rows of ``data [M, D]``."""
    rows, depth = (int(d) for d in data.shape)
    return encode_rows(lambda m, d: data[m, d], rows, depth, centroids, norms, row_align, num_chains)


def encode_rows(
    value_at,
    rows: int,
    depth: int,
    centroids: te.Tensor,
    norms: te.Tensor,
    row_align: int = ROW_ALIGN,
    num_chains: int | None = None,
) -> te.Tensor:
    """Codes ``[C, M]`` (uint8) of ``M`` rows of ``depth`` elements, ``value_at(m, d)`` giving
    element ``d`` of row ``m`` (a dense row, or a conv window read straight from the input)."""
    num_codebooks, _, sub_len = (int(d) for d in centroids.shape)
    if depth != num_codebooks * sub_len:
        raise ValueError(f"data depth {depth} != {num_codebooks} codebooks x {sub_len}")
    rows_pad = padded_rows(rows, row_align)
    xt = _padded_input(value_at, rows, depth, rows_pad, row_align)
    index = chained_argmin(_products(xt, centroids), norms, num_chains)
    return codes_of(index, rows, row_align)


def codes_of(index: te.Tensor, rows: int, row_align: int = ROW_ALIGN) -> te.Tensor:
    """``codes [C, M]`` uint8 from the argmin ``index [C, M_pad]`` of the padded rows (the moved
    last tile's rows sit ``M_pad - M`` positions later in the padded index)."""
    num_codebooks, rows_pad = (int(d) for d in index.shape)
    last_tile, shift = rows_pad // row_align - 1, rows_pad - rows
    if shift == 0 or last_tile == 0:
        return te.compute(
            (num_codebooks, rows), lambda c, m: index[c, m].astype(CODE_DTYPE), name=CODES_BLOCK
        )
    boundary = last_tile * row_align
    return te.compute(
        (num_codebooks, rows),
        lambda c, m: tirx.Select(
            m < boundary, index[c, m], index[c, m + shift]
        ).astype(CODE_DTYPE),
        name=CODES_BLOCK,
    )


def source_row(rows: int, row_align: int = ROW_ALIGN):
    """``m -> row``: which of the ``rows`` real rows padded row ``m`` reads (see the module doc)."""
    rows_pad = padded_rows(rows, row_align)
    last_tile, shift = rows_pad // row_align - 1, rows_pad - rows
    assert (shift > 0 and last_tile > 0) == shifted_last_tile(rows, row_align)
    if shift == 0:
        return lambda m: m
    if last_tile == 0:  # a single partial tile: repeat the last row
        return lambda m: tirx.min(m, rows - 1)
    # the last tile moved back to rows [M - align, M): overlaps the one before
    return lambda m: m - tirx.Select(m // row_align == last_tile, shift, 0)


def _padded_input(value_at, rows: int, depth: int, rows_pad: int, row_align: int) -> te.Tensor:
    """``xt [D, M_pad]``: the rows transposed, padded to whole tiles (see the module doc)."""
    row = source_row(rows, row_align)
    return te.compute((depth, rows_pad), lambda d, m: value_at(row(m), d), name=XT_BLOCK)


def _products(xt: te.Tensor, centroids: te.Tensor) -> te.Tensor:
    """``dot [C, K, M_pad]``: each row's sub-vector times each centroid."""
    num_codebooks, num_centroids, sub_len = (int(d) for d in centroids.shape)
    rows_pad = int(xt.shape[1])
    if sub_len == 1:
        return te.compute(
            (num_codebooks, num_centroids, rows_pad),
            lambda c, k, m: xt[c, m] * centroids[c, k, 0],
            name=DOT_BLOCK,
        )
    v = te.reduce_axis((0, sub_len), name="v")
    return te.compute(
        (num_codebooks, num_centroids, rows_pad),
        lambda c, k, m: te.sum(xt[c * sub_len + v, m] * centroids[c, k, v], axis=v),
        name=DOT_BLOCK,
    )


def chained_argmin(dot: te.Tensor, norms: te.Tensor, num_chains: int | None) -> te.Tensor:
    """The nearest centroid's index ``[C, M_pad]`` (int32, first wins a tie): ``J`` chains of
    consecutive centroids, each a running argmin of ``||P||^2 - 2 dot`` (in the dtype of
    ``dot`` and ``norms``: float32, or int32 for the int8 encode), merged in order."""
    num_codebooks, num_centroids, rows_pad = (int(d) for d in dot.shape)
    if num_chains is None:
        num_chains = argmin_chains(num_centroids)
    if num_centroids % num_chains:
        raise ValueError(f"{num_chains} argmin chains do not divide K = {num_centroids}")
    per_chain = num_centroids // num_chains
    argmin = _first_argmin_reducer()
    k = te.reduce_axis((0, per_chain), name="k")

    def distance(c, centroid, m):
        return norms[c, centroid] - tirx.const(2, dot.dtype) * dot[c, centroid, m]

    partial_index, partial_value = te.compute(
        (num_codebooks, num_chains, rows_pad),
        lambda c, j, m: argmin(
            (j * per_chain + k, distance(c, j * per_chain + k, m)), axis=k
        ),
        name=PARTIAL_BLOCK,
    )
    j = te.reduce_axis((0, num_chains), name="j")
    index, _ = te.compute(
        (num_codebooks, rows_pad),
        lambda c, m: argmin((partial_index[c, j, m], partial_value[c, j, m]), axis=j),
        name=ARGMIN_BLOCK,
    )
    return index


def encode_dense_rows_func(
    rows: int, num_codebooks: int, num_centroids: int, sub_len: int, num_chains: int | None = None
) -> tirx.PrimFunc:
    """``(x [M, D] f32, centroids [C, K, V] f32, norms [C, K] f32) -> codes [C, M] u8``."""
    if num_centroids > 256:
        raise ValueError(f"K = {num_centroids} centroids do not fit uint8 codes")
    data = te.placeholder((rows, num_codebooks * sub_len), "float32", "data")
    centroids = te.placeholder((num_codebooks, num_centroids, sub_len), "float32", "centroids")
    norms = te.placeholder((num_codebooks, num_centroids), "float32", "centroid_norms")
    codes = encode_dense_rows(data, centroids, norms, num_chains=num_chains)
    return to_prim_func([data, centroids, norms, codes], ENCODE_DENSE_ROWS)
