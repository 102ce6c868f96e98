"""TE compute of the grouped conv2d lookup: each output channel sums its own group's codebooks only.

A grouped conv with G groups is encoded like any conv over the full input (``C = G * C_g``
group-major codebooks): codes ``[N, OH, OW, C]`` (``lut_kernels.encode_conv2d_func``) or, with
``codebook_major``, ``[C, N*OH*OW]`` (the row encode, ``lut_conv_shuffle_compute``). The lookup reads
compact tables ``[C, K, O/G]``: ``acc[n, o, y, x] = sum_{j < C_g} T[g*C_g + j, code[n, y, x, g*C_g + j],
o - g*O/G]`` with ``g = o // (O/G)``, then ``acc * scale[o] + bias[o]``, optional ReLU (the NumPy
reference: ``lut_tvm.reference.grouped_lookup_accumulate``). The PrimFunc is kept opaque to Relax's
fusion; no LUT rule claims it, so the default dense-op rules schedule it.
"""

from __future__ import annotations

from tvm import te, tirx

from .attrs import OP_PATTERN_ATTR, OP_PATTERN_OPAQUE
from .lut_compute import ACC_DTYPE, CODE_DTYPE, TABLE_DTYPE

GROUPS_ATTR = "lut_tvm.groups"  # the grouped lookup's group count G


def lookup_grouped_conv2d(codes: te.Tensor, table: te.Tensor, scale: te.Tensor, bias: te.Tensor,
                          groups: int, relu: bool = False, out_shape=None) -> te.Tensor:
    """``Y[N, O, OH, OW]`` from codes ``[N, OH, OW, C]`` (or ``[C, N*OH*OW]`` with ``out_shape``
    given) and compact int8 tables ``[C, K, O/G]``."""
    if out_shape is None:
        batch, out_h, out_w, num_codebooks = (int(d) for d in codes.shape)
        code_at = lambda n, y, x, book: codes[n, y, x, book]  # noqa: E731
    else:
        batch, _, out_h, out_w = (int(d) for d in out_shape)
        num_codebooks = int(codes.shape[0])
        code_at = lambda n, y, x, book: codes[book, (n * out_h + y) * out_w + x]  # noqa: E731
    per_group = int(table.shape[2])
    group_codebooks = num_codebooks // groups
    j = te.reduce_axis((0, group_codebooks), name="j")

    def accumulate(n, o, y, x):
        book = (o // per_group) * group_codebooks + j
        return te.sum(table[book, code_at(n, y, x, book).astype("int32"), o % per_group].astype(ACC_DTYPE),
                      axis=j)

    acc = te.compute((batch, groups * per_group, out_h, out_w), accumulate, name="grouped_lookup_acc")

    def epilogue(n, o, y, x):
        value = acc[n, o, y, x].astype("float32") * scale[o] + bias[o]
        return tirx.max(value, tirx.const(0.0, "float32")) if relu else value

    return te.compute(acc.shape, epilogue, name="grouped_lookup_out")


def lookup_grouped_conv2d_func(codes_shape, num_centroids: int, out_channels: int, groups: int,
                               relu: bool = False, out_shape=None) -> tirx.PrimFunc:
    """``(codes [N, OH, OW, C], table [C, K, O/G], scale [O], bias [O]) -> y [N, O, OH, OW]``; with
    ``out_shape`` (``[N, O, OH, OW]``) the codes are codebook-major ``[C, N*OH*OW]``."""
    codes = te.placeholder(tuple(int(d) for d in codes_shape), CODE_DTYPE, "codes")
    num_codebooks = int(codes_shape[-1] if out_shape is None else codes_shape[0])
    if num_codebooks % groups or out_channels % groups:
        raise ValueError(f"grouped lookup: groups = {groups} must divide C = {num_codebooks} and "
                         f"O = {out_channels}")
    table = te.placeholder((num_codebooks, num_centroids, out_channels // groups), TABLE_DTYPE, "table")
    scale = te.placeholder((out_channels,), "float32", "scale")
    bias = te.placeholder((out_channels,), "float32", "bias")
    out = lookup_grouped_conv2d(codes, table, scale, bias, groups, relu, out_shape)
    func = te.create_prim_func([codes, table, scale, bias, out]).without_attr("global_symbol")
    return func.with_attr(OP_PATTERN_ATTR, OP_PATTERN_OPAQUE).with_attr(GROUPS_ATTR, int(groups))
