"""PrimFunc builders for each LUT primitive at static shapes, tagged for the schedule rules."""

from __future__ import annotations

from tvm import te, tirx

from .attrs import LutKind
from .lut_compute import (
    CODE_DTYPE,
    TABLE_DTYPE,
    Conv2dGeometry,
    encode_conv2d,
    encode_dense,
    lookup_accumulator_dense,
    lookup_conv2d,
    lookup_dense,
    to_prim_func,
)
from .lut_conv_shuffle_compute import lookup_conv2d_shuffle_func
from .lut_shuffle_compute import lookup_dense_shuffle_func


def _centroid_inputs(num_codebooks: int, num_centroids: int, sub_len: int):
    centroids = te.placeholder((num_codebooks, num_centroids, sub_len), "float32", "centroids")
    norms = te.placeholder((num_codebooks, num_centroids), "float32", "centroid_norms")
    return centroids, norms


def _table_inputs(num_codebooks: int, num_centroids: int, out_features: int):
    table = te.placeholder((num_codebooks, num_centroids, out_features), TABLE_DTYPE, "table")
    scale = te.placeholder((out_features,), "float32", "scale")
    bias = te.placeholder((out_features,), "float32", "bias")
    return table, scale, bias


def encode_dense_func(rows: int, num_codebooks: int, num_centroids: int, sub_len: int) -> tirx.PrimFunc:
    """``(x [M, D], centroids, norms) -> codes [M, C]``."""
    data = te.placeholder((rows, num_codebooks * sub_len), "float32", "data")
    centroids, norms = _centroid_inputs(num_codebooks, num_centroids, sub_len)
    codes = encode_dense(data, centroids, norms)
    return to_prim_func([data, centroids, norms, codes], LutKind.ENCODE_DENSE)


def encode_conv2d_func(
    data_shape, geometry: Conv2dGeometry, num_codebooks: int, num_centroids: int, sub_len: int
) -> tirx.PrimFunc:
    """``(x [N, C_in, H, W], centroids, norms) -> codes [N, OH, OW, C]``."""
    data = te.placeholder(tuple(data_shape), "float32", "data")
    centroids, norms = _centroid_inputs(num_codebooks, num_centroids, sub_len)
    codes = encode_conv2d(data, centroids, norms, geometry)
    return to_prim_func([data, centroids, norms, codes], LutKind.ENCODE_CONV2D)


def lookup_dense_func(
    rows: int, num_codebooks: int, num_centroids: int, out_features: int, relu: bool
) -> tirx.PrimFunc:
    """``(codes [M, C], table [C, K, N], scale [N], bias [N]) -> y [M, N]``."""
    codes = te.placeholder((rows, num_codebooks), CODE_DTYPE, "codes")
    table, scale, bias = _table_inputs(num_codebooks, num_centroids, out_features)
    out = lookup_dense(codes, table, scale, bias, relu)
    return to_prim_func([codes, table, scale, bias, out], LutKind.LOOKUP_DENSE, relu=int(relu))


def lookup_conv2d_func(
    codes_shape, num_centroids: int, out_channels: int, relu: bool
) -> tirx.PrimFunc:
    """``(codes [N, OH, OW, C], table [C, K, O], scale [O], bias [O]) -> y [N, O, OH, OW]``."""
    codes = te.placeholder(tuple(codes_shape), CODE_DTYPE, "codes")
    table, scale, bias = _table_inputs(int(codes_shape[-1]), num_centroids, out_channels)
    out = lookup_conv2d(codes, table, scale, bias, relu)
    return to_prim_func([codes, table, scale, bias, out], LutKind.LOOKUP_CONV2D, relu=int(relu))


def lookup_accumulator_func(rows: int, num_codebooks: int, num_centroids: int, out_features: int):
    """``(codes, table) -> acc [M, N]`` in int32: the exact accumulator, for checks."""
    codes = te.placeholder((rows, num_codebooks), CODE_DTYPE, "codes")
    table = te.placeholder((num_codebooks, num_centroids, out_features), TABLE_DTYPE, "table")
    acc = lookup_accumulator_dense(codes, table)
    return to_prim_func([codes, table, acc], LutKind.LOOKUP_DENSE, relu=0, epilogue=0)


LOOKUP_KINDS = (LutKind.LOOKUP_DENSE, LutKind.LOOKUP_CONV2D, LutKind.LOOKUP_DENSE_SHUFFLE,
                LutKind.LOOKUP_CONV2D_SHUFFLE)


def lookup_func_for(kind: str, codes_shape, table_shape, relu: bool, out_shape=None) -> tirx.PrimFunc:
    """The lookup PrimFunc of ``kind`` for its codes, table and output shapes (as a call has
    them; ``out_shape`` is needed by the conv shuffle lookup only)."""
    codes_shape = [int(d) for d in codes_shape]
    table_shape = [int(d) for d in table_shape]
    if kind == LutKind.LOOKUP_DENSE:
        return lookup_dense_func(*codes_shape, table_shape[1], table_shape[2], relu)
    if kind == LutKind.LOOKUP_CONV2D:
        return lookup_conv2d_func(codes_shape, table_shape[1], table_shape[2], relu)
    if kind == LutKind.LOOKUP_DENSE_SHUFFLE:
        num_codebooks, rows = codes_shape
        return lookup_dense_shuffle_func(rows, num_codebooks, table_shape[0], relu,
                                         num_centroids=table_shape[2])
    if kind == LutKind.LOOKUP_CONV2D_SHUFFLE:
        return lookup_conv2d_shuffle_func([int(d) for d in out_shape], codes_shape[0], relu,
                                          num_centroids=table_shape[2])
    raise ValueError(f"{kind!r} is not a lookup kernel kind")
