"""TE compute definitions of the LUT primitives: encode (nearest centroid) and lookup/accumulate.

Shapes and conventions (shared with the NumPy reference in ``lut_tvm.reference``):

* A dense layer computes ``Y[M, N] = X[M, D] @ W[D, N]``. A conv layer is the same after
  im2col, with ``D = C_in * kh * kw`` flattened in ``(c_in, kh, kw)`` order.
* ``D`` is split into ``C = D / V`` codebooks of ``V`` consecutive elements; codebook ``c`` has
  ``K`` centroids ``P[c, k, :]`` and their squared norms ``PN[c, k]``.
* encode: ``code[m, c] = argmin_k (PN[c, k] - 2 * X[m, cV:(c+1)V] . P[c, k])`` (first index
  wins a tie), stored as uint8.
* lookup/accumulate: ``acc[m, n] = sum_c T[c, code[m, c], n]`` in int32 over int8 tables
  (cannot overflow for C < 2**24), then ``Y = acc * scale[n] + bias[n]``, optional ReLU.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import te, tirx, topi

from .attrs import LutKind, tag_kernel

CODE_DTYPE = "uint8"
TABLE_DTYPE = "int8"
ACC_DTYPE = "int32"


@dataclass(frozen=True)
class Conv2dGeometry:
    """Static geometry of an NCHW conv2d: kernel, strides, padding (top, left, bottom, right), dilation."""

    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        """Output spatial size for an input of ``height x width``."""
        kh, kw = self.kernel
        top, left, bottom, right = self.padding
        out_h = (height + top + bottom - self.dilation[0] * (kh - 1) - 1) // self.strides[0] + 1
        out_w = (width + left + right - self.dilation[1] * (kw - 1) - 1) // self.strides[1] + 1
        return out_h, out_w


def _nearest_centroid(value_at, centroids: te.Tensor, norms: te.Tensor, prefix_shape, name: str):
    """Distances ``||P||^2 - 2 x.P`` over a reduction of V, then argmin over K, as uint8 codes.

    ``value_at(*prefix, c, v)`` returns the input element that codebook ``c`` sees at position
    ``v``. Returns the code tensor of shape ``prefix_shape + (C,)``.
    """
    num_codebooks, num_centroids, sub_len = (int(d) for d in centroids.shape)
    v = te.reduce_axis((0, sub_len), name="v")

    shape = (*prefix_shape, num_codebooks, num_centroids)

    def dot_product(*idx):
        *prefix, c, k = idx
        return te.sum(value_at(*prefix, c, v) * centroids[c, k, v], axis=v)

    dot = te.compute(shape, dot_product, name=f"{name}_dot")
    dist = te.compute(
        shape, lambda *i: norms[i[-2], i[-1]] - 2.0 * dot(*i), name=f"{name}_distance"
    )
    best = topi.argmin(dist, axis=-1)
    return te.compute(best.shape, lambda *i: best(*i).astype(CODE_DTYPE), name=f"{name}_codes")


def encode_dense(data: te.Tensor, centroids: te.Tensor, norms: te.Tensor) -> te.Tensor:
    """Codes ``[M, C]`` of the rows of ``data [M, D]``."""
    rows = int(data.shape[0])
    sub_len = int(centroids.shape[2])
    return _nearest_centroid(
        lambda m, c, v: data[m, c * sub_len + v], centroids, norms, (rows,), "encode"
    )


WINDOW_BLOCK = "encode_window"


def encode_conv2d(
    data: te.Tensor, centroids: te.Tensor, norms: te.Tensor, geometry: Conv2dGeometry
) -> te.Tensor:
    """Codes ``[N, OH, OW, C]`` of the im2col'd windows of ``data [N, C_in, H, W]`` (no im2col buffer)."""
    batch, _, height, width = (int(d) for d in data.shape)
    out_h, out_w = geometry.output_hw(height, width)
    kh, kw = geometry.kernel
    sub_len = int(centroids.shape[2])
    (stride_h, stride_w), (dil_h, dil_w) = geometry.strides, geometry.dilation
    top, left = geometry.padding[0], geometry.padding[1]

    def window_value(n, oh, ow, c, v):
        flat = c * sub_len + v
        cin, rest = flat // (kh * kw), flat % (kh * kw)
        row = oh * stride_h + (rest // kw) * dil_h - top
        col = ow * stride_w + (rest % kw) * dil_w - left
        inside = tirx.all(row >= 0, row < height, col >= 0, col < width)
        return tirx.if_then_else(inside, data[n, cin, row, col], tirx.const(0.0, data.dtype))

    if kh * kw > 1 and sub_len != kh * kw:
        # A codebook's sub-vector spans input channels / taps: the window is copied per output
        # position first (``LutEncodeRule`` puts the copy under the row loop, codebooks in lanes).
        # Not for 1x1 kernels, whose NHWC reads are strided, not scattered (measured 1x1 48->96
        # at 10x10, batch 32, V = 4: 0.19 ms NHWC, 0.25 ms window copy; V = 2: 1.1 / 0.22).
        window = te.compute((batch, out_h, out_w, int(centroids.shape[0]), sub_len), window_value,
                            name=WINDOW_BLOCK)
        return _nearest_centroid(lambda *i: window(*i), centroids, norms, (batch, out_h, out_w), "encode")
    return _nearest_centroid(
        window_value, centroids, norms, (batch, out_h, out_w), "encode"
    )


def _epilogue(acc: te.Tensor, scale: te.Tensor, bias: te.Tensor, out_channel_axis: int, relu: bool):
    """``acc * scale + bias`` per output channel, then optional ReLU, in float32."""

    def apply(*idx):
        n = idx[out_channel_axis]
        value = acc(*idx).astype("float32") * scale[n] + bias[n]
        return tirx.max(value, tirx.const(0.0, "float32")) if relu else value

    return te.compute(acc.shape, apply, name="lookup_out")


def lookup_dense(
    codes: te.Tensor, table: te.Tensor, scale: te.Tensor, bias: te.Tensor, relu: bool = False
) -> te.Tensor:
    """``Y[M, N]`` from codes ``[M, C]`` and an int8 table ``[C, K, N]``."""
    return _epilogue(lookup_accumulator_dense(codes, table), scale, bias, 1, relu)


def lookup_conv2d(
    codes: te.Tensor, table: te.Tensor, scale: te.Tensor, bias: te.Tensor, relu: bool = False
) -> te.Tensor:
    """``Y[N, O, OH, OW]`` (NCHW) from codes ``[N, OH, OW, C]`` and an int8 table ``[C, K, O]``."""
    batch, out_h, out_w, num_codebooks = (int(d) for d in codes.shape)
    out_channels = int(table.shape[2])
    c = te.reduce_axis((0, num_codebooks), name="c")
    acc = te.compute(
        (batch, out_channels, out_h, out_w),
        lambda n, o, y, x: te.sum(
            table[c, codes[n, y, x, c].astype("int32"), o].astype(ACC_DTYPE), axis=c
        ),
        name="lookup_acc",
    )
    return _epilogue(acc, scale, bias, 1, relu)


def lookup_accumulator_dense(codes: te.Tensor, table: te.Tensor) -> te.Tensor:
    """The raw int32 accumulator ``[M, N]`` of ``lookup_dense`` (for exactness checks)."""
    rows, num_codebooks = (int(d) for d in codes.shape)
    c = te.reduce_axis((0, num_codebooks), name="c")
    return te.compute(
        (rows, int(table.shape[2])),
        lambda m, n: te.sum(table[c, codes[m, c].astype("int32"), n].astype(ACC_DTYPE), axis=c),
        name="lookup_acc",
    )


def to_prim_func(tensors: list[te.Tensor], kind: str, **attrs) -> tirx.PrimFunc:
    """A PrimFunc over ``tensors`` (inputs then output), tagged with its LUT kind and kept unfused.

    ``te.create_prim_func`` names every function ``main``; the global symbol is dropped so that
    several can live in one module.
    """
    if kind not in LutKind.ALL:
        raise ValueError(f"unknown LUT kernel kind {kind!r}")
    func = te.create_prim_func(tensors).without_attr("global_symbol")
    return tag_kernel(func, kind, **attrs)
