"""Conv2dWeightPacked: constant-weight NCHW conv2ds read a channel-blocked weight packed at compile time.

Before: ``relax.nn.conv2d(x, w)`` with data/out layout NCHW, kernel layout OIHW and a constant
float32 ``w`` of shape ``[F, C / G, kh, kw]`` (what the torch and ONNX frontends emit; run after
the LUT rewrite passes, which match conv2d weights in OIHW, and before ``LegalizeOps``).
After: ``call_tir`` of a ``conv2d`` PrimFunc (a pad block only where there is padding, then the
``conv2d_nchw`` reduction ``out[n, f, y, x] += pad[n, group(f) + rc, y*sh + ry*dh, x*sw + rx*dw] *
wp[f // fb, rc, ry, rx, f % fb]``) whose weight ``wp`` is ``w`` packed at compile time to
``[G * F'_g / fb, C / G, kh, kw, fb]``. ``fb`` is the output-channel tile that the conv2d schedule
rule (schedules/rules/dense_ops/conv2d_nchw.py) picks for the current target and shape, so that
its register-blocked micro-kernel streams the weight contiguously (an HWIO or OIHW weight is read
with large strides, which the hardware prefetchers do not follow: dense ResNet-50 lost about half
its time to it). ``F'_g`` is a group's ``F / G`` output channels rounded up to whole vectors (zero
channels, dropped by a last ``conv2d_slice`` block) when that costs at most half the channels
more. Left to ``LegalizeOps`` unchanged: convs with a non-constant weight, other layouts or
dtypes, dynamic shapes, and grouped convs whose groups have too few output channels for a vector
(depthwise convs).

1x1 convs (one group, no padding or dilation) whose output positions per image round up to whole
vectors at little cost become ``W[F, C] @ x[N, C, H * W]`` instead (strided input subsampled first,
positions zero-padded and sliced off), for the Matmul rule, which vectorizes over positions and
broadcasts the weight: measured 1.5-2.8x faster than the channel-vectorized conv on ResNet-50's
1x1 convs (e.g. 64->256 at 56x56, 1 thread: 1.52 -> 0.54 ms).
"""

from __future__ import annotations

import numpy as np
from tvm import relax, te, topi
from tvm.ir import IRModule
from tvm.ir.transform import PassContext, module_pass
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.script import tirx as T
from tvm.target import Target

from lut_tvm._tvm_compat import constant_value
from lut_tvm.target_features import target_features
from schedules.rules.dense_ops.conv2d_nchw import padded_channels, pick_conv_tiles

from .layer_sites import is_constant_nchw_conv2d, static_shape
from .planned_rewriter import rewrite_relax_functions

# Without a current target (a pass run outside ``with target``): AVX-512's 16 float lanes.
DEFAULT_LANES = 16
# Grouped convs are packed only when a group's output channels fill a vector of at least this many lanes.
MIN_GROUP_BLOCK = 8
# A 1x1 conv becomes a matmul when rounding its positions up to whole vectors adds at most this share.
MAX_COLUMN_PAD = 0.15
# Convs on at most this many input channels (an image's) and taps are lowered through im2col + matmul
# (ShuffleNet's 3x3 stride-2 stem, 1 thread: 0.73 -> 0.25 ms; a 7x7 stem measured no faster: 1.97 -> 2.1 ms).
MAX_IM2COL_CHANNELS = 4
MAX_IM2COL_TAPS = 9


def pack_weight(weight: np.ndarray, groups: int, group_padded: int, block: int) -> np.ndarray:
    """OIHW ``weight`` of a conv with ``groups`` groups, each group's output channels zero-padded
    to ``group_padded``, as ``[groups * group_padded / block, I / groups, H, W, block]``."""
    per_group = weight.shape[0] // groups
    parts = weight.reshape(groups, per_group, *weight.shape[1:])
    if group_padded > per_group:
        zeros = np.zeros((groups, group_padded - per_group, *weight.shape[1:]), weight.dtype)
        parts = np.concatenate([parts, zeros], axis=1)
    padded = parts.reshape(groups * group_padded // block, block, *weight.shape[1:])
    return np.ascontiguousarray(padded.transpose(0, 2, 3, 4, 1))


def packed_conv2d(data: te.Tensor, weight: te.Tensor, groups: int, n_f: int, strides, padding,
                  dilation) -> te.Tensor:
    """TE of an NCHW conv2d with ``groups`` groups on the packed weight ``[G * F'_g / fb, C / G, kh, kw, fb]``
    (``fb`` divides ``F'_g``, each group's output channels padded from ``n_f / G`` to ``F'_g``)."""
    n, _, h, w = (int(d) for d in data.shape)
    f_blocks, c_group, kh, kw, block = (int(d) for d in weight.shape)
    blocks_per_group = f_blocks // groups
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dilation, padding
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    if any((pt, pl, pb, pr)):
        data = topi.nn.pad(data, [0, 0, pt, pl], [0, 0, pb, pr], name="pad_temp")
    rc = te.reduce_axis((0, c_group), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def channel(f):
        return rc if groups == 1 else f // block // blocks_per_group * c_group + rc

    out = te.compute(
        (n, f_blocks * block, oh, ow),
        lambda b, f, y, x: te.sum(
            data[b, channel(f), y * sh + ry * dh, x * sw + rx * dw] * weight[f // block, rc, ry, rx, f % block],
            axis=[rc, ry, rx]),
        name="conv2d_nchw", tag="conv2d_nchw")
    if f_blocks * block == n_f:
        return out
    per_group, group_padded = n_f // groups, f_blocks * block // groups
    return te.compute((n, n_f, oh, ow), lambda b, f, y, x: out[b, f // per_group * group_padded + f % per_group, y, x],
                      name="conv2d_slice")


def _lanes() -> int:
    target = Target.current(allow_none=True)
    return target_features(target).vector_lanes(32) if target is not None else DEFAULT_LANES


@mutator
class _PackWeight(PyExprMutator):
    def __init__(self, mod: IRModule):
        super().__init__(mod)
        self.lanes = _lanes()

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if not is_constant_nchw_conv2d(call):
            return call
        attrs = call.attrs
        data, weight = call.args
        value = constant_value(weight)
        out_shape = static_shape(call)  # None unless data and output are static float32
        groups = int(attrs.groups)
        if value.ndim != 4 or value.dtype != np.float32 or static_shape(data) is None or out_shape is None:
            return call
        columns = _matmul_columns(attrs, value, groups, out_shape, self.lanes)
        if columns is not None:
            return conv_as_matmul(self.builder_, data, value, attrs, out_shape, columns)
        per_group = value.shape[0] // groups
        group_padded = padded_channels(per_group, self.lanes)
        block = pick_conv_tiles(group_padded, out_shape[2], out_shape[3], self.lanes)[0]
        if groups > 1 and block < MIN_GROUP_BLOCK:
            return call  # depthwise and narrow groups: not a vector of output channels per group
        packed = relax.const(pack_weight(value, groups, group_padded, block))
        return self.builder_.call_te(
            packed_conv2d, data, packed, groups, value.shape[0],
            [int(s) for s in attrs.strides], [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation],
            primfunc_name_hint="conv2d")


def _matmul_columns(attrs, value, groups: int, out_shape, lanes: int) -> int | None:
    """Output positions per image rounded up to whole vector pairs (else whole vectors) when the conv
    is best a matmul (``conv_as_matmul``) and the rounding adds at most ``MAX_COLUMN_PAD``; else None.
    A matmul: 1x1 convs (any stride, no padding or dilation, groups of at least ``MIN_GROUP_BLOCK``
    output channels) and one-group convs with at most ``MAX_IM2COL_CHANNELS`` input channels and
    ``MAX_IM2COL_TAPS`` taps (a stem, whose short reduction leaves the direct conv's tiles mostly
    write-back) whose positions are whole vectors already (padded ones cost a slice and an
    unvectorized reshape after the matmul that ate the gain: SqueezeNet's 111 x 111 stem)."""
    pointwise = value.shape[2:] == (1, 1) and not any(int(p) for p in attrs.padding) and all(
        int(d) == 1 for d in attrs.dilation) and (groups == 1 or value.shape[0] // groups >= MIN_GROUP_BLOCK)
    columns = out_shape[2] * out_shape[3]
    if not pointwise and (groups != 1 or value.shape[1] > MAX_IM2COL_CHANNELS
                          or value.shape[2] * value.shape[3] > MAX_IM2COL_TAPS or columns % lanes):
        return None
    for multiple in (2 * lanes, lanes):  # two vectors per row of the matmul's register tile first
        padded = -(-columns // multiple) * multiple
        if padded <= columns * (1 + MAX_COLUMN_PAD):
            return padded
    return None


def im2col_func(shape, kernel: tuple[int, int], strides, padding, dilation, out_hw: tuple[int, int], columns: int):
    """PrimFunc ``x[N, C, H, W] -> cols[N, C * kh * kw, columns]``: row ``(c, ry, rx)`` holds the input that
    tap of a conv reads at each output position (``y * OW + x``), then zeros up to ``columns``. Written in
    TIR rather than TE so that each output row is a run of contiguous stores (a TE compute over the
    flat position would divide by ``OW`` per element)."""
    n, c, h, w = shape
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr), (oh, ow) = kernel, strides, dilation, padding, out_hw
    hp, wp, taps, rows, tail = h + pt + pb, w + pl + pr, kh * kw, c * kh * kw, max(columns - oh * ow, 1)

    @T.prim_func(private=True, s_tir=True)
    def im2col(x: T.Buffer((n, c, h, w), "float32"), cols: T.Buffer((n, rows, columns), "float32")):
        padded = T.sblock_alloc_buffer((n, c, hp, wp))
        for b, ci, y, xx in T.grid(n, c, hp, wp):
            with T.sblock("pad"):
                vb, vc, vy, vx = T.axis.remap("SSSS", [b, ci, y, xx])
                padded[vb, vc, vy, vx] = T.if_then_else(
                    pt <= vy and vy < pt + h and pl <= vx and vx < pl + w, x[vb, vc, vy - pt, vx - pl], T.float32(0))
        for b, r, y, xx in T.grid(n, rows, oh, ow):
            with T.sblock("im2col"):
                vb, vr, vy, vx = T.axis.remap("SSSS", [b, r, y, xx])
                cols[vb, vr, vy * ow + vx] = padded[vb, vr // taps, vy * sh + vr % taps // kw * dh,
                                                    vx * sw + vr % kw * dw]
        for b, r, t in T.grid(n, rows, tail):
            with T.sblock("zeros"):
                vb, vr, vt = T.axis.remap("SSS", [b, r, t])
                if oh * ow + vt < columns:
                    cols[vb, vr, oh * ow + vt] = T.float32(0)

    return im2col


def conv_as_matmul(builder: relax.BlockBuilder, data: relax.Expr, value: np.ndarray, attrs, out_shape,
                   columns: int) -> relax.Expr:
    """A conv as ``W[F, R] @ x[N, R, OH * OW]`` (``G`` groups: ``W[G, F / G, R] @ x[N, G, R, OH * OW]``),
    ``R = C / G * kh * kw``: for a 1x1 conv ``x`` is the input (subsampled first for a stride), else
    the input's ``im2col``; the positions zero-padded to ``columns``, the padding sliced off the product."""
    n, f, oh, ow = out_shape
    groups, reduce = int(attrs.groups), int(np.prod(value.shape[1:]))
    strides = [int(s) for s in attrs.strides]
    if value.shape[2:] != (1, 1):
        func = im2col_func(static_shape(data), value.shape[2:], strides, [int(p) for p in attrs.padding],
                           [int(d) for d in attrs.dilation], (oh, ow), columns)
        rows = builder.emit(relax.call_tir(builder.add_func(func, "im2col"), [data],
                                           relax.TensorType((n, reduce, columns), "float32")))
        return _matmul_rows(builder, rows, value.reshape(f, reduce), out_shape, columns)
    if any(s != 1 for s in strides):
        shape = static_shape(data)
        data = builder.emit(relax.op.strided_slice(data, axes=[2, 3], begin=[0, 0], end=[shape[2], shape[3]],
                                                   strides=strides))
    lead = [n, reduce] if groups == 1 else [n, groups, reduce]
    rows = builder.emit(relax.op.reshape(data, [*lead, oh * ow]))
    if columns > oh * ow:
        rows = builder.emit(relax.op.nn.pad(rows, [0, 0] * (len(lead)) + [0, columns - oh * ow]))
    weight = value.reshape(f, reduce) if groups == 1 else value.reshape(groups, f // groups, reduce)
    return _matmul_rows(builder, rows, weight, out_shape, columns)


def _matmul_rows(builder: relax.BlockBuilder, rows: relax.Expr, weight: np.ndarray, out_shape, columns: int):
    """``weight @ rows`` (the last axis ``columns`` positions, of which the first ``OH * OW`` are
    real) as the conv's ``[N, F, OH, OW]`` output."""
    n, f, oh, ow = out_shape
    product = builder.emit(relax.op.matmul(relax.const(np.ascontiguousarray(weight)), rows))
    if columns > oh * ow:
        product = builder.emit(relax.op.strided_slice(product, axes=[weight.ndim], begin=[0], end=[oh * ow]))
    return relax.op.reshape(product, [n, f, oh, ow])


@module_pass(opt_level=0, name="Conv2dWeightPacked")
class Conv2dWeightPacked:
    """Constant-weight NCHW conv2ds to a conv2d PrimFunc on a compile-time packed weight."""

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        return rewrite_relax_functions(mod, _PackWeight(mod))
