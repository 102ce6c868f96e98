"""TE compute and PrimFunc builders of the conv2d shuffle path: row encode and NCHW shuffle lookup.

A conv is the dense LUT layer over its output positions: row ``m = (n * OH + oh) * OW + ow``
(``M = N * OH * OW``) is the im2col window of that position, flattened ``(c_in, kh, kw)``.

* encode (``encode_conv2d_rows``): the row encode of ``lut_encode_rows_compute`` (codes written
  codebook-major ``[C, M]``, rows in the vector lanes), reading each window element from the
  NCHW input or a small copy of it (block ``encode_rows_input``), never an im2col buffer.
  ``input_layout`` (default: ``default_input_layout``): ``direct`` reads the input in place,
  each load clamped into the image and selected to 0 outside it; ``padded`` first copies it
  zero-padded ``[N, C_in, H + pads, W + pads]`` (the schedule then copies each chunk of rows'
  windows from it, ``xt_mode="chunk"`` of ``schedules.rules.lut_encode_rows``, a contiguous
  vector per output row and tap); ``shifted`` copies it ``kw`` times, column-shifted,
  strided and padded, ``[kw, N, C_in, H + pads, OW]`` (tap ``(r, s)`` of output rows ``y, y+1``
  then sit in consecutive elements, so a tile of 16 positions over short rows is one vector
  load). Measured, one thread, AVX-512, machine loaded by other jobs (ms; direct / padded /
  shifted): digits 16->32 at 8x8, batch 72: 0.31 / 0.83 / 0.44; 32->32 at 4x4, batch 72:
  0.15 / 0.41 / 0.19; ResNet 64->64 at 32x32: 0.27 / 0.26 / 0.28; 128->128 at 16x16:
  0.15 / 0.15 / 0.15; 256->256 at 8x8: 0.064 / 0.18 / 0.069; 1x1 64->64 at 32x32: 0.041 /
  0.047 / 0.047. (With a guarded load, ``if_then_else``, instead of clamp-and-select, direct
  was 2-10x slower and the copies 3x slower.) Those figures predate the chunked window copy;
  with it, padded is the default where tiles straddle output rows (OW = 20, 10, 5).
  The function carries ``out_width`` and ``input_layout`` attributes for the schedule.
* lookup (``lookup_conv2d_shuffle``): the int16 accumulators of the dense shuffle lookup
  (``lut_shuffle_compute.shuffle_accumulators``, tables ``[O, C, K]``, K = 16 or, with VBMI, 32 / 64), with the epilogue
  writing the NCHW output ``Y[n, o, oh, ow] = acc[o, m] * scale[o] + bias[o]`` directly
  (optional ReLU): no reshape or transpose after it, and FuseLUTEpilogue sees the channel on
  axis 1 as for the gather conv lookup.
"""

from __future__ import annotations

import math

from tvm import te, tirx

from .attrs import LutKind
from .lut_compute import CODE_DTYPE, Conv2dGeometry, to_prim_func
from .lut_encode_rows_compute import ROW_ALIGN, encode_rows, shifted_last_tile
from .lut_shuffle_compute import (
    INT16_SAFE_CODEBOOKS,
    NUM_CENTROIDS,
    OUT_BLOCK,
    TABLE_DTYPE,
    scaled_output,
    shuffle_accumulators,
)

ENCODE_CONV2D_ROWS = LutKind.ENCODE_CONV2D_ROWS
LOOKUP_CONV2D_SHUFFLE = LutKind.LOOKUP_CONV2D_SHUFFLE
INPUT_COPY_BLOCK = "encode_rows_input"
INPUT_LAYOUTS = ("shifted", "padded", "direct")
# Function attributes the schedule reads (set by ``encode_conv2d_rows_func``).


def _window_reader(data: te.Tensor, geometry: Conv2dGeometry, input_layout: str):
    """``value_at(m, d)``: element ``d`` (``(c_in, kh, kw)`` order) of output position ``m``'s
    window, read through the ``input_layout`` copy of ``data`` (see the module docstring)."""
    batch, channels, height, width = (int(d) for d in data.shape)
    out_h, out_w = geometry.output_hw(height, width)
    kh, kw = geometry.kernel
    (stride_h, stride_w), (dil_h, dil_w) = geometry.strides, geometry.dilation
    top, left, bottom, right = geometry.padding
    zero = tirx.const(0.0, data.dtype)

    def input_at(n, c, row, col):
        """``data`` at padded coordinates ``(row, col)``: 0 in the padding. The load is clamped
        into the image and selected, not guarded (``if_then_else``): it then vectorizes (3x
        faster copy measured at 8x8)."""
        row, col = row - top, col - left
        inside = tirx.all(row >= 0, row < height, col >= 0, col < width)
        row_in = tirx.max(tirx.min(row, height - 1), 0)
        col_in = tirx.max(tirx.min(col, width - 1), 0)
        return tirx.Select(inside, data[n, c, row_in, col_in], zero)

    padded_h = height + top + bottom
    if input_layout == "shifted":
        source = te.compute(
            (kw, batch, channels, padded_h, out_w),
            lambda s, n, c, row, x: input_at(n, c, row, x * stride_w + s * dil_w),
            name=INPUT_COPY_BLOCK,
        )
    elif input_layout == "padded":
        source = te.compute((batch, channels, padded_h, width + left + right), input_at,
                            name=INPUT_COPY_BLOCK)
    elif input_layout != "direct":
        raise ValueError(f"input_layout must be one of {INPUT_LAYOUTS}, not {input_layout!r}")

    def value_at(m, d):
        n, pos = m // (out_h * out_w), m % (out_h * out_w)
        cin, tap = d // (kh * kw), d % (kh * kw)
        row = (pos // out_w) * stride_h + (tap // kw) * dil_h
        if input_layout == "shifted":
            return source[tap % kw, n, cin, row, pos % out_w]
        col = (pos % out_w) * stride_w + (tap % kw) * dil_w
        return source[n, cin, row, col] if input_layout == "padded" else input_at(n, cin, row, col)

    return value_at, batch * out_h * out_w


def chunk_block(out_w: int) -> int:
    """Rows of the smallest chunk the schedule copies windows for: whole 16-row tiles made of
    whole output rows, ``lcm(16, OW)``."""
    return math.lcm(ROW_ALIGN, out_w)


def default_input_layout(data_shape, geometry: Conv2dGeometry) -> str:
    """``padded`` when 16-row tiles straddle output rows at varying offsets (neither ``OW`` nor
    16 divides the other) and the rows are whole chunks (``chunk_block``): the schedule then
    copies each chunk's windows from the padded input, an output row per vector copy, instead
    of gathering every window element with per-lane index arithmetic (2-3.5x faster on the
    digits CNN's 20x20 and 10x10 convs; at OW = 4 or 32, and with a column stride, the direct
    reads were faster, see ``benchmarks/results/encode_speed.md``).
    Else ``direct``, or ``shifted`` when the rows are not whole 16-row tiles: the moved last tile
    (``lut_encode_rows_compute``) puts a select into every direct window index, and LLVM then
    takes 20+ s to compile the encode (0.7 s with the shifted copy, measured on a 9x7 input)."""
    out_h, out_w = geometry.output_hw(int(data_shape[2]), int(data_shape[3]))
    rows = int(data_shape[0]) * out_h * out_w
    straddles = out_w % ROW_ALIGN != 0 and ROW_ALIGN % out_w != 0
    if straddles and rows % chunk_block(out_w) == 0:
        return "padded"
    return "shifted" if shifted_last_tile(rows) else "direct"


def encode_conv2d_rows_func(
    data_shape, geometry: Conv2dGeometry, num_codebooks: int, num_centroids: int, sub_len: int,
    input_layout: str | None = None,
) -> tirx.PrimFunc:
    """``(x [N, C_in, H, W] f32, centroids [C, K, V], norms [C, K]) -> codes [C, N*OH*OW] u8``;
    ``input_layout`` one of ``INPUT_LAYOUTS``, by default ``default_input_layout``."""
    if num_centroids > 256:
        raise ValueError(f"K = {num_centroids} centroids do not fit uint8 codes")
    data = te.placeholder(tuple(int(d) for d in data_shape), "float32", "data")
    depth = int(data_shape[1]) * geometry.kernel[0] * geometry.kernel[1]
    centroids = te.placeholder((num_codebooks, num_centroids, sub_len), "float32", "centroids")
    norms = te.placeholder((num_codebooks, num_centroids), "float32", "centroid_norms")
    layout = input_layout or default_input_layout(data_shape, geometry)
    value_at, rows = _window_reader(data, geometry, layout)
    codes = encode_rows(value_at, rows, depth, centroids, norms)
    out_w = geometry.output_hw(int(data_shape[2]), int(data_shape[3]))[1]
    return to_prim_func([data, centroids, norms, codes], ENCODE_CONV2D_ROWS, out_width=out_w,
                        input_layout=layout)


def lookup_conv2d_shuffle(
    codes_t: te.Tensor, table: te.Tensor, scale: te.Tensor, bias: te.Tensor, out_hw,
    relu: bool = False, chunk: int = INT16_SAFE_CODEBOOKS,
) -> te.Tensor:
    """``Y[N, O, OH, OW]`` float32 from codes ``[C, N*OH*OW]`` uint8 and a table ``[O, C, K]`` int8."""
    out_h, out_w = out_hw
    rows = int(codes_t.shape[1])
    if rows % (out_h * out_w):
        raise ValueError(f"{rows} code rows are not whole {out_h}x{out_w} images")
    accs = shuffle_accumulators(codes_t, table, chunk=chunk)
    return te.compute(
        (rows // (out_h * out_w), int(table.shape[0]), out_h, out_w),
        lambda n, o, y, x: scaled_output(accs, scale, bias, o, (n * out_h + y) * out_w + x, relu),
        name=OUT_BLOCK,
    )


def lookup_conv2d_shuffle_func(
    out_shape, num_codebooks: int, relu: bool = False, chunk: int = INT16_SAFE_CODEBOOKS,
    num_centroids: int = NUM_CENTROIDS,
) -> tirx.PrimFunc:
    """``(codes [C, M] u8, table [O, C, K] i8, scale [O], bias [O]) -> y [N, O, OH, OW] f32``."""
    batch, out_channels, out_h, out_w = (int(d) for d in out_shape)
    codes = te.placeholder((num_codebooks, batch * out_h * out_w), CODE_DTYPE, "codes")
    table = te.placeholder((out_channels, num_codebooks, num_centroids), TABLE_DTYPE, "table")
    scale = te.placeholder((out_channels,), "float32", "scale")
    bias = te.placeholder((out_channels,), "float32", "bias")
    out = lookup_conv2d_shuffle(codes, table, scale, bias, (out_h, out_w), relu, chunk)
    return to_prim_func([codes, table, scale, bias, out], LOOKUP_CONV2D_SHUFFLE, relu=int(relu))
