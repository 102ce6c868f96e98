"""TE compute and PrimFunc builders of LUT-NA's exact dense kernel (bit planes x activation tables).

The math and the weight layout are those of ``lut_tvm.exact.reference`` (see its docstring):

* activations ``xq [M, D]`` int8 (or float32 ``x`` quantized in the kernel:
  ``clip(nearbyint(x / sx), -127, 127)``, float32, half to even; for a conv2d the rows are the
  im2col windows of the NCHW input, read in place by ``quantize_windows``: no im2col buffer);
* ``exact_table``: ``T[m, g, k] = sum_{i<4} bit_i(k) * xq[m, 4g+i]`` int16 ``[M, Gc, 16]``,
  built at run time from the activations (the tail group reads zeros past ``D``);
* ``exact_plane_acc``: ``acc[j, m, n] = sum_{e < Kmax} T[m, gidx[e, n], pat[j, e, n]]`` int32,
  over each column's list of nonzero groups (``gidx [Kmax, N]`` int32, ``pat [b, Kmax, N]``
  uint8; padding entries select ``T[m, 0, 0] = 0``). Groups whose 4 weights are all zero are
  not in the list: the reduction runs over ``Kmax`` (the densest column), not ``Gc``;
* ``exact_combine``: ``acc[m, n] = sum_{j<b-1} acc_j * 2^j - acc_{b-1} * 2^(b-1)`` int32
  (multiplication by a constant power of two, which LLVM emits as a shift);
* ``exact_out`` (float variant only): ``float32(acc + bias_q[n]) * out_scale[n]``, optional ReLU
  (bias in int32 at the accumulator's scale, so the float part is one multiply and LLVM has no
  multiply-add to contract into an FMA: the result equals the NumPy reference bit for bit).

``schedules.exact_shuffle_compute`` builds the byte-shuffle form of the same kernel on these
stages. Overflow: ``|T| <= 508``; ``|acc_j| <= 508 * Gc`` and the combined value ``<= 127 * 128 * D``
fit int32 for ``D < 2^17``.
"""

from __future__ import annotations

from tvm import te, tirx

from .attrs import LutKind, tag_kernel
from .lut_compute import Conv2dGeometry

EXACT_LUT_DENSE = LutKind.EXACT_LUT_DENSE
# Value of the ``lut_tvm.input`` attribute: the kernel reads rows ``x [M, D]`` or the im2col
# windows of an NCHW input (a conv2d; the output is still ``[N*OH*OW, O]``).
INPUT_ROWS = "rows"
INPUT_CONV2D = "conv2d_windows"

GROUP = 4
TABLE_ENTRIES = 16
ACT_DTYPE = "int8"
TABLE_DTYPE = "int16"
ACC_DTYPE = "int32"
PATTERN_DTYPE = "uint8"
INDEX_DTYPE = "int32"
ACT_QMAX = 127

QUANT_BLOCK = "exact_quant"
TABLE_BLOCK = "exact_table"
ACC_BLOCK = "exact_plane_acc"
COMBINE_BLOCK = "exact_combine"
OUT_BLOCK = "exact_out"


def nearbyint(value):
    """float32 round half to even as a direct ``llvm.nearbyint`` call: TVM's ``tirx.nearbyint``
    is scalarized by its vectorizer (LLVM then re-vectorizes the quantize loops with gathers,
    measured ~30 us of 128 x 384 rows); the LLVM intrinsic is widened with the loop."""
    return tirx.call_llvm_pure_intrin("float32", "llvm.nearbyint", value)


def quantize_activations(x: te.Tensor, act_scale: float) -> te.Tensor:
    """int8 ``clip(nearbyint(x / sx), -127, 127)`` in float32."""
    scale = tirx.const(float(act_scale), "float32")
    low, high = tirx.const(-ACT_QMAX, "float32"), tirx.const(ACT_QMAX, "float32")
    return te.compute(
        x.shape,
        lambda m, d: tirx.max(tirx.min(nearbyint(x[m, d] / scale), high), low).astype(ACT_DTYPE),
        name=QUANT_BLOCK,
    )


def quantize_windows(data: te.Tensor, geometry: Conv2dGeometry, act_scale: float) -> te.Tensor:
    """int8 im2col rows ``[N*OH*OW, C*kh*kw]`` of an NCHW ``data``, quantized like
    ``quantize_activations`` (padding reads 0, which quantizes to 0), ``(c, kh, kw)`` order."""
    batch, channels, height, width = (int(d) for d in data.shape)
    out_h, out_w = geometry.output_hw(height, width)
    kh, kw = geometry.kernel
    (stride_h, stride_w), (dil_h, dil_w) = geometry.strides, geometry.dilation
    top, left = geometry.padding[0], geometry.padding[1]
    scale = tirx.const(float(act_scale), "float32")
    low, high = tirx.const(-ACT_QMAX, "float32"), tirx.const(ACT_QMAX, "float32")

    def window(m, d):
        n, pixel = m // (out_h * out_w), m % (out_h * out_w)
        cin, tap = d // (kh * kw), d % (kh * kw)
        row = (pixel // out_w) * stride_h + (tap // kw) * dil_h - top
        col = (pixel % out_w) * stride_w + (tap % kw) * dil_w - left
        inside = tirx.all(row >= 0, row < height, col >= 0, col < width)
        value = tirx.if_then_else(inside, data[n, cin, row, col], tirx.const(0.0, "float32"))
        return tirx.max(tirx.min(nearbyint(value / scale), high), low).astype(ACT_DTYPE)

    return te.compute((batch * out_h * out_w, channels * kh * kw), window, name=QUANT_BLOCK)


def activation_tables(xq: te.Tensor) -> te.Tensor:
    """``T [M, Gc, 16]`` int16: every sum of a subset of each group of 4 activations."""
    rows, depth = (int(d) for d in xq.shape)
    groups = -(-depth // GROUP)

    def element(m, g, i):
        d = g * GROUP + i
        if depth % GROUP == 0:
            return xq[m, d].astype(TABLE_DTYPE)
        return tirx.if_then_else(
            d < depth, xq[m, tirx.min(d, depth - 1)].astype(TABLE_DTYPE),
            tirx.const(0, TABLE_DTYPE),
        )

    def table(m, g, k):
        total = None
        for i in range(GROUP):
            term = tirx.Select(
                tirx.bitwise_and(tirx.shift_right(k, i), 1) == 1,
                element(m, g, i), tirx.const(0, TABLE_DTYPE),
            )
            total = term if total is None else total + term
        return total

    return te.compute((rows, groups, TABLE_ENTRIES), table, name=TABLE_BLOCK)


def exact_lut_accumulator(xq: te.Tensor, group_index: te.Tensor, patterns: te.Tensor) -> te.Tensor:
    """The exact int32 ``xq @ Wq`` ``[M, N]`` from int8 activations and the packed weight."""
    rows = int(xq.shape[0])
    bits, kmax, cols = (int(d) for d in patterns.shape)
    if tuple(int(d) for d in group_index.shape) != (kmax, cols):
        raise ValueError(f"group_index {tuple(group_index.shape)} does not match patterns "
                         f"{tuple(patterns.shape)}")
    tables = activation_tables(xq)
    e = te.reduce_axis((0, kmax), name="e")
    planes = te.compute(
        (bits, rows, cols),
        lambda j, m, n: te.sum(
            tables[m, group_index[e, n], patterns[j, e, n].astype("int32")].astype(ACC_DTYPE),
            axis=e,
        ),
        name=ACC_BLOCK,
    )

    def combine(m, n):
        total = planes[0, m, n]
        for j in range(1, bits - 1):
            total = total + planes[j, m, n] * tirx.const(1 << j, ACC_DTYPE)
        return total - planes[bits - 1, m, n] * tirx.const(1 << (bits - 1), ACC_DTYPE)

    return te.compute((rows, cols), combine, name=COMBINE_BLOCK)


def dequantize_epilogue(acc: te.Tensor, out_scale: te.Tensor, bias_q: te.Tensor,
                        relu: bool) -> te.Tensor:
    """``float32(acc + bias_q[n]) * out_scale[n]`` ``[M, N]``, optional ReLU (one multiply)."""

    def epilogue(m, n):
        value = (acc[m, n] + bias_q[n]).astype("float32") * out_scale[n]
        return tirx.max(value, tirx.const(0.0, "float32")) if relu else value

    return te.compute(acc.shape, epilogue, name=OUT_BLOCK)


def exact_lut_dense(x: te.Tensor, group_index: te.Tensor, patterns: te.Tensor, act_scale: float,
                    out_scale: te.Tensor, bias_q: te.Tensor, relu: bool = False) -> te.Tensor:
    """float32 ``Y [M, N]`` of the quantized layer: quantize, exact LUT, + int32 bias, dequantize."""
    acc = exact_lut_accumulator(quantize_activations(x, act_scale), group_index, patterns)
    return dequantize_epilogue(acc, out_scale, bias_q, relu)


def layer_input(input_shape, geometry: Conv2dGeometry | None, act_scale: float):
    """``(x placeholder, xq [M, D] int8 stage, input kind)`` of a dense or conv2d layer."""
    x = te.placeholder(tuple(input_shape), "float32", "x")
    if geometry is None:
        return x, quantize_activations(x, act_scale), INPUT_ROWS
    return x, quantize_windows(x, geometry, act_scale), INPUT_CONV2D


def _packed_inputs(bits: int, kmax: int, out_features: int):
    group_index = te.placeholder((kmax, out_features), INDEX_DTYPE, "group_index")
    patterns = te.placeholder((bits, kmax, out_features), PATTERN_DTYPE, "patterns")
    return group_index, patterns


def to_exact_prim_func(tensors, kind: str = EXACT_LUT_DENSE, **attrs) -> tirx.PrimFunc:
    func = te.create_prim_func(tensors).without_attr("global_symbol")
    return tag_kernel(func, kind, **attrs)


def exact_lut_accumulator_func(rows: int, depth: int, bits: int, kmax: int,
                               out_features: int) -> tirx.PrimFunc:
    """``(xq [M, D] i8, group_index [Kmax, N] i32, patterns [b, Kmax, N] u8) -> acc [M, N] i32``."""
    xq = te.placeholder((rows, depth), ACT_DTYPE, "xq")
    group_index, patterns = _packed_inputs(bits, kmax, out_features)
    acc = exact_lut_accumulator(xq, group_index, patterns)
    return to_exact_prim_func([xq, group_index, patterns, acc], bits=bits, float_io=0)


def exact_lut_dense_func(rows: int, depth: int, bits: int, kmax: int, out_features: int,
                         act_scale: float, relu: bool = False) -> tirx.PrimFunc:
    """``(x [M, D] f32, group_index, patterns, out_scale [N] f32, bias_q [N] i32) -> y [M, N] f32``."""
    x = te.placeholder((rows, depth), "float32", "x")
    group_index, patterns = _packed_inputs(bits, kmax, out_features)
    out_scale = te.placeholder((out_features,), "float32", "out_scale")
    bias_q = te.placeholder((out_features,), ACC_DTYPE, "bias_q")
    y = exact_lut_dense(x, group_index, patterns, act_scale, out_scale, bias_q, relu)
    return to_exact_prim_func([x, group_index, patterns, out_scale, bias_q, y], bits=bits, float_io=1,
                         relu=int(relu), input=INPUT_ROWS)


def exact_lut_conv2d_func(input_shape, geometry: Conv2dGeometry, bits: int, kmax: int,
                          out_features: int, act_scale: float, relu: bool = False) -> tirx.PrimFunc:
    """``(x [N, C, H, W] f32, group_index, patterns, out_scale, bias_q) -> y [N*OH*OW, O] f32``:
    the im2col windows quantized in the kernel, then the same exact LUT as the dense kernel."""
    x, xq, kind = layer_input(input_shape, geometry, act_scale)
    group_index, patterns = _packed_inputs(bits, kmax, out_features)
    out_scale = te.placeholder((out_features,), "float32", "out_scale")
    bias_q = te.placeholder((out_features,), ACC_DTYPE, "bias_q")
    acc = exact_lut_accumulator(xq, group_index, patterns)
    y = dequantize_epilogue(acc, out_scale, bias_q, relu)
    return to_exact_prim_func([x, group_index, patterns, out_scale, bias_q, y], bits=bits, float_io=1,
                         relu=int(relu), input=kind)
