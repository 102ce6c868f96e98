"""NumPy reference of the LUT math (im2col, encode, tables, lookup/accumulate), independent of TVM.

Tests check the compiled kernels against these functions; the graph passes use
``build_tables``/``quantize_tables`` so that the tables a model runs with are defined once.
"""

from __future__ import annotations

import numpy as np

INT8_MAX = 127


def pair(value) -> tuple[int, int]:
    """``(h, w)`` from an int or a pair (a conv's kernel, strides or dilation)."""
    if np.isscalar(value):
        return int(value), int(value)
    first, second = value
    return int(first), int(second)


def conv_padding4(padding, kernel=(1, 1), dilation=1) -> tuple[int, int, int, int]:
    """A conv's zero padding as ``(top, left, bottom, right)`` (Relax's order) from an int, torch's
    ``(ph, pw)`` pair, a 4-tuple, or torch's ``"valid"`` / ``"same"`` (for ``"same"``, the odd pixel
    of an even kernel span goes bottom/right, as torch pads)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"conv padding {padding!r} is not 'valid', 'same' or a number")
        spans = [d * (k - 1) for d, k in zip(pair(dilation), pair(kernel))]
        return spans[0] // 2, spans[1] // 2, spans[0] - spans[0] // 2, spans[1] - spans[1] // 2
    if np.isscalar(padding):
        return (int(padding),) * 4
    if len(padding) == 2:
        return int(padding[0]), int(padding[1]), int(padding[0]), int(padding[1])
    top, left, bottom, right = padding
    return int(top), int(left), int(bottom), int(right)


def conv_output_hw(height: int, width: int, kernel, strides, padding, dilation) -> tuple[int, int]:
    """``(OH, OW)`` of a conv over an ``height x width`` input (``padding`` as ``conv_padding4`` takes)."""
    (kh, kw), (sh, sw), (dh, dw) = pair(kernel), pair(strides), pair(dilation)
    top, left, bottom, right = conv_padding4(padding, kernel, dilation)
    return ((height + top + bottom - dh * (kh - 1) - 1) // sh + 1,
            (width + left + right - dw * (kw - 1) - 1) // sw + 1)


def im2col_nchw(x, kernel, strides=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)):
    """Rows ``[N*OH*OW, C_in*kh*kw]`` of an NCHW input and ``(N, OH, OW)``: row ``(n, oh, ow)`` in
    C order, each flattened in ``(c_in, kh, kw)`` order (the ``[D, N]`` weight's ``D``, see
    ``weights.as_dense_matrix``). The one im2col definition: ``lut_tvm.train.layers.conv_rows``
    (torch) is tested against it row for row.

    ``kernel``/``strides``/``dilation``: an int or a pair; ``padding``: zeros, anything
    ``conv_padding4`` takes (``(top, left, bottom, right)`` as in Relax's conv2d).
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"conv input must be NCHW, got shape {x.shape}")
    batch, channels, height, width = x.shape
    (kh, kw), strides, dilation = pair(kernel), pair(strides), pair(dilation)
    top, left, bottom, right = conv_padding4(padding, kernel, dilation)
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    out_h, out_w = conv_output_hw(height, width, kernel, strides, (top, left, bottom, right), dilation)
    cols = np.empty((batch, out_h, out_w, channels, kh, kw), dtype=x.dtype)
    for r in range(kh):
        for s in range(kw):
            row0, col0 = r * dilation[0], s * dilation[1]
            window = padded[
                :,
                :,
                row0 : row0 + strides[0] * (out_h - 1) + 1 : strides[0],
                col0 : col0 + strides[1] * (out_w - 1) + 1 : strides[1],
            ]
            cols[..., r, s] = window.transpose(0, 2, 3, 1)
    return cols.reshape(batch * out_h * out_w, channels * kh * kw), (batch, out_h, out_w)


def centroid_distances(rows, centroids):
    """Distances ``||P||^2 - 2 x.P`` ``[M, C, K]`` in float64 (``||x||^2`` does not move the argmin)."""
    num_codebooks, _, sub_len = centroids.shape
    subs = rows.reshape(rows.shape[0], num_codebooks, sub_len).astype(np.float64)
    cents = centroids.astype(np.float64)
    return (cents**2).sum(-1)[None] - 2.0 * np.einsum("mcv,ckv->mck", subs, cents)


def encode(rows, centroids):
    """Nearest-centroid codes ``[M, C]`` (uint8) of ``rows [M, C*V]``, first index on a tie."""
    return centroid_distances(rows, centroids).argmin(-1).astype(np.uint8)


def encode_margin(rows, centroids):
    """Gap between the two smallest distances per ``[M, C]``: small values mark near-ties."""
    two = np.partition(centroid_distances(rows, centroids), 1, axis=-1)
    return two[..., 1] - two[..., 0]


def build_tables(centroids, weight_dn):
    """Real-valued tables ``T[c, k, n] = P[c, k] . W[cV:(c+1)V, n]`` for ``W [D, N]``."""
    num_codebooks, _, sub_len = centroids.shape
    blocks = weight_dn.reshape(num_codebooks, sub_len, weight_dn.shape[1]).astype(np.float64)
    return np.einsum("ckv,cvn->ckn", centroids.astype(np.float64), blocks)


TABLE_SCALE_GRANULARITIES = ("layer", "column")


def quantize_tables(tables, granularity: str = "layer"):
    """INT8 tables and their scale: returns ``(int8 tables, scale)``.

    ``granularity`` ``"layer"``: one scale ``max|T| / 127`` (a float32 scalar); ``"column"``: one
    scale per output column, ``scale[n] = max_{c,k} |T[c, k, n]| / 127`` (float32 ``[N]``). A scale
    whose tables are all zero is 1. Levels are ``rint(T / scale)`` (the float64 scale), clipped to
    +-127; the layer's output is then ``acc[m, n] * scale[n] + bias[n]`` (``scaled_output``).
    """
    if granularity not in TABLE_SCALE_GRANULARITIES:
        raise ValueError(f"table scale granularity {granularity!r} is not one of {TABLE_SCALE_GRANULARITIES}")
    tables = np.asarray(tables)
    if granularity == "layer":
        peak = float(np.abs(tables).max())
        scale = peak / INT8_MAX if peak > 0 else 1.0
    else:
        peak = np.abs(tables).reshape(-1, tables.shape[-1]).max(axis=0).astype(np.float64)
        scale = np.where(peak > 0, peak / INT8_MAX, 1.0)
    quantized = np.clip(np.rint(tables / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    return quantized, (np.float32(scale) if granularity == "layer" else scale.astype(np.float32))


def scaled_output(acc, scale, bias=None):
    """``acc[m, n] * scale[n] + bias[n]`` in float32 for a scalar or per-column ``scale``."""
    out = acc.astype(np.float32) * np.asarray(scale, dtype=np.float32)
    return out if bias is None else out + np.asarray(bias, dtype=np.float32)


def column_scale(scale, out_features: int) -> np.ndarray:
    """The per-column scale vector ``[N]`` float32 the kernels read, from a scalar or ``[N]`` scale."""
    return np.broadcast_to(np.asarray(scale, dtype=np.float32), (out_features,)).copy()


def lookup_accumulate(codes, tables_q):
    """Exact int32 accumulator ``acc[m, n] = sum_c T[c, code[m, c], n]``."""
    num_codebooks = tables_q.shape[0]
    gathered = tables_q[np.arange(num_codebooks)[None, :], codes.astype(np.int64), :]
    return gathered.astype(np.int32).sum(axis=1, dtype=np.int32)


def lut_output(codes, centroids, weight_dn, bias=None, granularity: str = "layer", tables=None):
    """A LUT dense layer's output for given ``codes [M, C]``: the INT8 tables of ``P.W`` (or of the
    free real-valued ``tables [C, K, N]``) quantized at ``granularity``, looked up and summed,
    ``acc * scale + bias``."""
    real = build_tables(centroids, weight_dn) if tables is None else np.asarray(tables, dtype=np.float64)
    tables_q, scale = quantize_tables(real, granularity)
    return scaled_output(lookup_accumulate(codes, tables_q), scale, bias)


def lut_matmul(rows, centroids, weight_dn, bias=None, granularity: str = "layer"):
    """A whole LUT dense layer on ``rows [M, D]``: encode, lookup, ``acc * scale + bias`` with the
    tables quantized at ``granularity`` (``quantize_tables``)."""
    return lut_output(encode(rows, centroids), centroids, weight_dn, bias, granularity)


def lut_conv2d(x, centroids, weight_oihw, bias=None, strides=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1),
               granularity: str = "layer"):
    """A whole LUT conv layer on NCHW ``x`` through im2col; returns NCHW."""
    out_channels = weight_oihw.shape[0]
    rows, (batch, out_h, out_w) = im2col_nchw(x, weight_oihw.shape[2:], strides, padding, dilation)
    flat = lut_matmul(rows, centroids, weight_oihw.reshape(out_channels, -1).T, bias, granularity)
    return flat.reshape(batch, out_h, out_w, out_channels).transpose(0, 3, 1, 2)


# Grouped and depthwise convs: G independent convs on channel slices. The full im2col rows (``D = I *
# kh * kw``, group-major) are encoded as one layer with centroids ``[G * C_g, K, V]`` (codebook ``c``
# belongs to group ``c // C_g``); each group's tables ``[C_g, K, O/G]`` feed its own outputs only.


def build_grouped_tables(centroids, weight_oihw, groups: int):
    """Real-valued tables ``[C, K, O/G]`` of a grouped conv: ``T[g*C_g + j, k, o] = P[g*C_g + j, k] .
    W_g[j*V:(j+1)*V, o]`` with ``W_g`` group ``g``'s ``[D_g, O/G]`` matrix (outputs ``g*O/G + o``)."""
    num_codebooks, _, sub_len = centroids.shape
    per_group = weight_oihw.shape[0] // groups
    tables = []
    for group, cents in enumerate(np.split(np.asarray(centroids), groups)):
        weight = weight_oihw[group * per_group:(group + 1) * per_group]
        tables.append(build_tables(cents, weight.reshape(per_group, -1).T))
    return np.concatenate(tables)


def _grouped_columns(tables, groups: int):
    """``[C, K, O/G]`` grouped tables as ``[C/G, K, O]`` (column ``g*O/G + o``), and the inverse."""
    num_codebooks, num_centroids, per_group = tables.shape
    blocks = tables.reshape(groups, num_codebooks // groups, num_centroids, per_group)
    return blocks.transpose(1, 2, 0, 3).reshape(num_codebooks // groups, num_centroids, groups * per_group)


def quantize_grouped_tables(tables, groups: int, granularity: str = "layer"):
    """INT8 grouped tables ``[C, K, O/G]`` and their scale (a scalar, or ``[O]`` per output channel
    ``g*O/G + o``, the max over that group's codebooks), as ``quantize_tables`` does for a dense layer."""
    tables = np.asarray(tables)
    quantized, scale = quantize_tables(_grouped_columns(tables, groups), granularity)
    num_codebooks, num_centroids, per_group = tables.shape
    blocks = quantized.reshape(num_codebooks // groups, num_centroids, groups, per_group)
    return blocks.transpose(2, 0, 1, 3).reshape(tables.shape), scale


def grouped_lookup_accumulate(codes, tables, groups: int):
    """``acc[m, g*O/G + o] = sum_{j < C_g} T[g*C_g + j, code[m, g*C_g + j], o]`` ``[M, O]`` (int32 for
    int8 tables, float64 for real ones)."""
    num_codebooks = tables.shape[0]
    gathered = tables[np.arange(num_codebooks)[None, :], codes.astype(np.int64), :]  # [M, C, O/G]
    dtype = np.int32 if np.issubdtype(tables.dtype, np.integer) else np.float64
    per_group = gathered.reshape(len(codes), groups, num_codebooks // groups, -1).sum(axis=2, dtype=dtype)
    return per_group.reshape(len(codes), -1)


def lut_grouped_conv2d(x, centroids, weight_oihw, groups: int, bias=None, strides=(1, 1),
                       padding=(0, 0, 0, 0), dilation=(1, 1), granularity: str = "layer", tables=None):
    """A whole grouped LUT conv layer (weight ``[O, I/G, kh, kw]``) on NCHW ``x``; returns NCHW:
    encode the full im2col rows, look up each group's INT8 tables (of ``P.W`` or the free real
    ``tables [C, K, O/G]``), ``acc * scale + bias``."""
    out_channels = weight_oihw.shape[0]
    rows, (batch, out_h, out_w) = im2col_nchw(x, weight_oihw.shape[2:], strides, padding, dilation)
    flat = lut_grouped_output(encode(rows, centroids), centroids, weight_oihw, groups, bias, granularity, tables)
    return flat.reshape(batch, out_h, out_w, out_channels).transpose(0, 3, 1, 2)


def lut_grouped_output(codes, centroids, weight_oihw, groups: int, bias=None, granularity: str = "layer",
                       tables=None):
    """A grouped LUT conv's ``[M, O]`` output for given ``codes [M, C]`` (``lut_output`` of a grouped conv)."""
    real = build_grouped_tables(centroids, weight_oihw, groups) if tables is None else tables
    tables_q, scale = quantize_grouped_tables(real, groups, granularity)
    return scaled_output(grouped_lookup_accumulate(codes, tables_q, groups), scale, bias)
