"""TE compute and PrimFunc builders of the int8 dense layer: per-row activation quantization, then
the uint8 x int8 -> int32 product on a pre-packed weight and the dequantize.

The math is ``lut_tvm.int8_reference`` (see its docstring), in two kernels:

* ``int8_quantize_rows`` (kind ``int8_quantize_rows``): ``x [M, D]`` float32 to
  ``xq [Mp, Dp]`` uint8, ``xs [Mp]`` float32, ``zp [Mp]`` float32 (whole numbers); rows past ``M`` repeat the
  last row and depths past ``D`` are 0 (the packed weight is 0 there);
* ``int8_dense`` (kind ``int8_dense``): ``acc[m, n] = sum_k int32(xq[m, k]) *
  int32(wpack[n // L, k // R, n % L, k % R])`` over the packed weight ``[Np/L, Dp/R, L, R]``
  (``lut_tvm.int8_reference.pack_weight``), then ``y [M, N] = float32(acc - int32(zp[m]) * colsum[n]) *
  xs[m] * ws[n]``.

``act_bits`` (7 or 8) is the activations' width (``lut_tvm.int8_reference``): the quantize
kernel clamps to ``2 ** act_bits - 1`` and both kernels carry it as the ``act_bits`` attribute,
which the rule reads to pick an intrinsic that is exact for it.

``L x R`` is the shape of one dot-product instruction (``schedules.intrin.int8_dot``): the
weight is packed for the target it is compiled for. ``M`` is padded to whole row blocks
(``ROW_BLOCK``) so that no row tile has a partial row (the tensorized loop nest takes no
predicate); ``M <= ROW_BLOCK`` is one block of ``M`` rows.
"""

from __future__ import annotations

from tvm import te, tirx

from lut_tvm.int8_reference import act_qmax

from .attrs import LutKind, tag_kernel

INT8_DENSE = LutKind.INT8_DENSE
INT8_QUANTIZE_ROWS = LutKind.INT8_QUANTIZE_ROWS

ROW_BLOCK = 4

MIN_BLOCK = "int8_row_min"
MAX_BLOCK = "int8_row_max"
SCALE_BLOCK = "int8_row_scale"
ZP_BLOCK = "int8_row_zero_point"
QUANT_BLOCK = "int8_quant"
ACC_BLOCK = "int8_acc"
OUT_BLOCK = "int8_out"


def padded_rows(rows: int) -> int:
    """Rows of the quantized activations: ``rows`` up to ``ROW_BLOCK``, else whole row blocks."""
    return rows if rows <= ROW_BLOCK else -(-rows // ROW_BLOCK) * ROW_BLOCK


def _f32(value: float):
    return tirx.const(value, "float32")


def round_even(value):
    """``rint`` (half to even) as LLVM's ``roundeven``: TVM 0.27 vectorizes that call, while its
    ``nearbyint`` in a vectorized loop turns the loop's loads and stores into gathers and scatters
    (4x slower quantization)."""
    return tirx.call_llvm_pure_intrin("float32", "llvm.roundeven", value)


def quantize_rows(x: te.Tensor, padded_depth: int, act_bits: int = 8):
    """``(xq [Mp, Dp] uint8, xs [Mp] float32, zp [Mp] float32)`` of ``x [M, D]`` float32 (the zero
    point is a whole number in [0, 2 ** act_bits - 1], kept in float32 as the quantization uses it)."""
    qmax = float(act_qmax(act_bits))
    rows, depth = (int(d) for d in x.shape)
    mp = padded_rows(rows)
    last = rows - 1

    def row(m):
        return tirx.min(m, last) if mp != rows else m

    d = te.reduce_axis((0, depth), name="d")
    low = te.compute((mp,), lambda m: te.min(x[row(m), d], axis=d), name=MIN_BLOCK)
    d = te.reduce_axis((0, depth), name="d")
    high = te.compute((mp,), lambda m: te.max(x[row(m), d], axis=d), name=MAX_BLOCK)

    def scale(m):
        span = (tirx.max(high[m], _f32(0.0)) - tirx.min(low[m], _f32(0.0))) / _f32(qmax)
        return tirx.Select(span > _f32(0.0), span, _f32(1.0))

    xs = te.compute((mp,), scale, name=SCALE_BLOCK)
    zp_f = te.compute(
        (mp,),
        lambda m: tirx.max(tirx.min(round_even(-tirx.min(low[m], _f32(0.0)) / xs[m]),
                                    _f32(qmax)), _f32(0.0)),
        name=ZP_BLOCK,
    )

    def quant(m, k):
        padded = padded_depth != depth  # only then clamp the read (a clamped index is not a vector load)
        value = round_even(x[row(m), tirx.min(k, depth - 1) if padded else k] / xs[m]) + zp_f[m]
        value = tirx.max(tirx.min(value, _f32(qmax)), _f32(0.0)).astype("uint8")
        return tirx.if_then_else(k < depth, value, tirx.const(0, "uint8")) if padded else value

    return te.compute((mp, padded_depth), quant, name=QUANT_BLOCK), xs, zp_f


def int8_dense(xq: te.Tensor, wpack: te.Tensor, colsum: te.Tensor, xs: te.Tensor, zp: te.Tensor,
               ws: te.Tensor, rows: int) -> te.Tensor:
    """``y [rows, N]`` float32 from the quantized rows and the packed weight (see the module doc)."""
    mp = int(xq.shape[0])
    blocks, depth_groups, lanes, group = (int(d) for d in wpack.shape)
    cols = int(colsum.shape[0])
    ko = te.reduce_axis((0, depth_groups), name="ko")
    ki = te.reduce_axis((0, group), name="ki")
    acc = te.compute(
        (mp, blocks * lanes),
        lambda m, n: te.sum(
            xq[m, ko * group + ki].astype("int32") * wpack[n // lanes, ko, n % lanes, ki].astype("int32"),
            axis=[ko, ki],
        ),
        name=ACC_BLOCK,
    )
    return te.compute(
        (rows, cols),
        lambda m, n: (acc[m, n] - zp[m].astype("int32") * colsum[n]).astype("float32") * xs[m] * ws[n],
        name=OUT_BLOCK,
    )


def int8_quantize_rows_func(rows: int, depth: int, padded_depth: int, act_bits: int = 8) -> tirx.PrimFunc:
    """``(x [M, D] f32) -> (xq [Mp, Dp] u8, xs [Mp] f32, zp [Mp] f32)``."""
    x = te.placeholder((rows, depth), "float32", "x")
    xq, xs, zp = quantize_rows(x, padded_depth, act_bits)
    func = te.create_prim_func([x, xq, xs, zp]).without_attr("global_symbol")
    return tag_kernel(func, INT8_QUANTIZE_ROWS, act_bits=int(act_bits))


def int8_dense_func(rows: int, packed_shape, out_features: int, act_bits: int = 8) -> tirx.PrimFunc:
    """``(xq [Mp, Dp] u8, wpack [Np/L, Dp/R, L, R] i8, colsum [N] i32, xs [Mp] f32, zp [Mp] f32,
    ws [N] f32) -> y [M, N] f32``."""
    blocks, depth_groups, lanes, group = (int(d) for d in packed_shape)
    mp = padded_rows(rows)
    xq = te.placeholder((mp, depth_groups * group), "uint8", "xq")
    wpack = te.placeholder((blocks, depth_groups, lanes, group), "int8", "wpack")
    colsum = te.placeholder((out_features,), "int32", "colsum")
    xs = te.placeholder((mp,), "float32", "xs")
    zp = te.placeholder((mp,), "float32", "zp")
    ws = te.placeholder((out_features,), "float32", "ws")
    y = int8_dense(xq, wpack, colsum, xs, zp, ws, rows)
    func = te.create_prim_func([xq, wpack, colsum, xs, zp, ws, y]).without_attr("global_symbol")
    return tag_kernel(func, INT8_DENSE, act_bits=int(act_bits))
