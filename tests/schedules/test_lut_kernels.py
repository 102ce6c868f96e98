"""The LUT kernel builders under their default schedule rules, against the NumPy reference."""

import functools

import numpy as np
import pytest
import tvm
from tvm import tirx

from lut_tvm import reference as ref
from schedules.lut_compute import Conv2dGeometry
from schedules.lut_kernels import (
    encode_conv2d_func,
    encode_dense_func,
    lookup_accumulator_func,
    lookup_conv2d_func,
    lookup_dense_func,
)
from lut_tvm.targets import host_cpu_flags
from schedules.rules.lut_encode import LutEncodeRule
from schedules.rules.lut_lookup import LutLookupRule
from lut_tvm.testing import assert_no_near_ties, check_codes, loop_kinds


def _has_avx512() -> bool:
    return "avx512f" in host_cpu_flags()


TARGET = tvm.target.Target(
    {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2} if _has_avx512() else {"kind": "llvm"}
)


def schedule(func, rule):
    sch = rule.apply(func, TARGET, False)
    assert sch is not None, "the rule must accept its own kernel"
    scheduled = sch.mod["main"]
    kinds = loop_kinds(scheduled)
    assert tirx.ForKind.PARALLEL in kinds, scheduled.script()
    assert tirx.ForKind.VECTORIZED in kinds, scheduled.script()
    # The rule keeps the function's tags.
    assert scheduled.attrs["lut_tvm.kind"] == func.attrs["lut_tvm.kind"]
    return scheduled


def build(func, rule):
    return tvm.compile(schedule(func, rule).with_attr("global_symbol", "main"), TARGET)


def tensor(array):
    return tvm.runtime.tensor(np.ascontiguousarray(array))


def norms_of(centroids):
    return (centroids.astype(np.float64) ** 2).sum(-1).astype(np.float32)


def run_encode(ex, data, centroids, codes_shape):
    codes = tensor(np.full(codes_shape, 251, np.uint8))  # garbage the kernel must overwrite
    ex(tensor(data), tensor(centroids), tensor(norms_of(centroids)), codes)
    return codes.numpy()


def assert_codes_match(codes, rows, centroids):
    """``codes [M, C]`` are the nearest centroids (either one at a near-tie: ``check_codes``)."""
    assert codes.dtype == np.uint8
    check_codes(codes, rows, centroids)


# --- encode, dense ----------------------------------------------------------------------------


# K = 130 (codes above 127) rather than 256: vectorizing over K = 256 takes ~10 s to compile.
@pytest.mark.parametrize(
    "rows,num_codebooks,num_centroids,sub_len",
    [
        (37, 7, 16, 3),
        (5, 3, 130, 4),
        (1, 40, 2, 2),
        (5, 7, 16, 1),  # V = 1: no sub-vector loop
    ],
)
def test_encode_dense(rows, num_codebooks, num_centroids, sub_len):
    rng = np.random.default_rng(rows + num_codebooks)
    data = rng.standard_normal((rows, num_codebooks * sub_len)).astype(np.float32)
    centroids = rng.standard_normal((num_codebooks, num_centroids, sub_len)).astype(np.float32)
    data[0] = centroids[:, -1].reshape(-1)  # row 0 is made of the last centroids
    ex = build(encode_dense_func(rows, num_codebooks, num_centroids, sub_len), LutEncodeRule())
    codes = run_encode(ex, data, centroids, (rows, num_codebooks))
    assert_codes_match(codes, data, centroids)
    assert (codes[0] == num_centroids - 1).all()  # e.g. 129: codes above int8 range survive


def test_encode_dense_centroid_rows_and_ties():
    """Rows made of centroids encode to them exactly; a duplicated centroid resolves to the first."""
    rng = np.random.default_rng(11)
    rows, num_codebooks, num_centroids, sub_len = 37, 7, 16, 3
    centroids = rng.standard_normal((num_codebooks, num_centroids, sub_len)).astype(np.float32)
    centroids[:, 9] = centroids[:, 4]
    want = rng.integers(0, num_centroids, (rows, num_codebooks))
    data = centroids[np.arange(num_codebooks)[None, :], want].reshape(rows, -1)
    ex = build(encode_dense_func(rows, num_codebooks, num_centroids, sub_len), LutEncodeRule())
    codes = run_encode(ex, data, centroids, (rows, num_codebooks))
    np.testing.assert_array_equal(codes, np.where(want == 9, 4, want))


# --- lookup / accumulate ----------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def accumulator_kernel(rows, num_codebooks, num_centroids, out_features):
    return build(lookup_accumulator_func(rows, num_codebooks, num_centroids, out_features), LutLookupRule())


def run_accumulator(codes, table):
    rows, num_codebooks = codes.shape
    _, num_centroids, out_features = table.shape
    ex = accumulator_kernel(rows, num_codebooks, num_centroids, out_features)
    acc = tensor(np.full((rows, out_features), -12345, np.int32))
    ex(tensor(codes), tensor(table), acc)
    return acc.numpy()


@pytest.mark.parametrize(
    "rows,num_codebooks,num_centroids,out_features", [(37, 7, 16, 13), (3, 300, 16, 40)]
)
def test_lookup_accumulator_exact(rows, num_codebooks, num_centroids, out_features):
    rng = np.random.default_rng(num_codebooks)
    codes = rng.integers(0, num_centroids, (rows, num_codebooks)).astype(np.uint8)
    codes[0, :] = num_centroids - 1
    table = rng.integers(-128, 128, (num_codebooks, num_centroids, out_features)).astype(np.int8)
    np.testing.assert_array_equal(run_accumulator(codes, table), ref.lookup_accumulate(codes, table))


def test_lookup_accumulator_extreme_tables():
    """C = 300 codebooks of +-127 sum to +-38100: int32 accumulation, no int8/int16 wrap."""
    rows, num_codebooks, num_centroids, out_features = 3, 300, 16, 40
    rng = np.random.default_rng(3)
    codes = rng.integers(0, num_centroids, (rows, num_codebooks)).astype(np.uint8)
    table = np.where(rng.random((num_codebooks, num_centroids, out_features)) < 0.5, 127, -127)
    table = table.astype(np.int8)
    table[:, :, 0] = 127
    table[:, :, 1] = -127
    acc = run_accumulator(codes, table)
    np.testing.assert_array_equal(acc, ref.lookup_accumulate(codes, table))
    assert (acc[:, 0] == 127 * num_codebooks).all() and (acc[:, 1] == -127 * num_codebooks).all()


def epilogue(acc, scale, bias, relu):
    out = acc.astype(np.float64) * scale.astype(np.float64) + bias.astype(np.float64)
    return np.maximum(out, 0) if relu else out


def assert_epilogue_close(got, want, acc, scale):
    # rtol 1e-6, plus float32 rounding of acc * scale when bias nearly cancels it.
    atol = 1e-6 * max(1.0, float(np.abs(acc.astype(np.float64) * scale).max()))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=atol)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize(
    "rows,num_codebooks,num_centroids,out_features", [(37, 7, 16, 13), (2, 300, 16, 17)]
)
def test_lookup_dense_epilogue(rows, num_codebooks, num_centroids, out_features, relu):
    rng = np.random.default_rng(out_features + relu)
    codes = rng.integers(0, num_centroids, (rows, num_codebooks)).astype(np.uint8)
    if num_codebooks >= 300:  # extreme tables
        table = np.where(rng.random((num_codebooks, num_centroids, out_features)) < 0.5, 127, -127)
    else:
        table = rng.integers(-127, 128, (num_codebooks, num_centroids, out_features))
    table = table.astype(np.int8)
    scale = rng.uniform(0.001, 0.1, out_features).astype(np.float32)
    bias = rng.standard_normal(out_features).astype(np.float32)
    ex = build(lookup_dense_func(rows, num_codebooks, num_centroids, out_features, relu), LutLookupRule())
    out = tensor(np.full((rows, out_features), np.nan, np.float32))
    ex(tensor(codes), tensor(table), tensor(scale), tensor(bias), out)
    acc = ref.lookup_accumulate(codes, table)
    want = epilogue(acc, scale, bias, relu)
    if relu:
        assert (want == 0).any() and (want > 0).any()
    assert_epilogue_close(out.numpy(), want, acc, scale)


# --- conv2d ------------------------------------------------------------------------------------

# (input NCHW, kernel, strides, padding (top, left, bottom, right), dilation, sub_len)
CONV_CASES = [
    ((2, 3, 11, 8), (3, 3), (2, 2), (1, 0, 2, 1), (2, 2), 3),
    ((1, 2, 9, 13), (3, 2), (1, 2), (1, 0, 2, 1), (2, 1), 4),
    # V = kh*kw (the NHWC copy) and a 1x1 kernel; the cases above copy each window.
    ((2, 4, 6, 5), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 9),
    ((2, 8, 5, 5), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 4),
]


@pytest.mark.parametrize("data_shape,kernel,strides,padding,dilation,sub_len", CONV_CASES)
def test_encode_conv2d(data_shape, kernel, strides, padding, dilation, sub_len):
    rng = np.random.default_rng(sum(data_shape))
    geometry = Conv2dGeometry(kernel, strides, padding, dilation)
    depth = data_shape[1] * kernel[0] * kernel[1]
    num_codebooks, num_centroids = depth // sub_len, 16
    assert num_codebooks * sub_len == depth
    data = rng.standard_normal(data_shape).astype(np.float32)
    centroids = rng.standard_normal((num_codebooks, num_centroids, sub_len)).astype(np.float32)
    rows, (batch, out_h, out_w) = ref.im2col_nchw(data, kernel, strides, padding, dilation)
    assert geometry.output_hw(*data_shape[2:]) == (out_h, out_w)
    func = encode_conv2d_func(data_shape, geometry, num_codebooks, num_centroids, sub_len)
    ex = build(func, LutEncodeRule())
    codes = run_encode(ex, data, centroids, (batch, out_h, out_w, num_codebooks))
    assert_codes_match(codes.reshape(-1, num_codebooks), rows, centroids)


@pytest.mark.parametrize("relu", [False, True])
def test_lookup_conv2d(relu):
    rng = np.random.default_rng(5 + relu)
    codes_shape, num_centroids, out_channels = (2, 5, 3, 7), 16, 13
    num_codebooks = codes_shape[-1]
    codes = rng.integers(0, num_centroids, codes_shape).astype(np.uint8)
    table = rng.integers(-127, 128, (num_codebooks, num_centroids, out_channels)).astype(np.int8)
    scale = rng.uniform(0.001, 0.1, out_channels).astype(np.float32)
    bias = rng.standard_normal(out_channels).astype(np.float32)
    ex = build(lookup_conv2d_func(codes_shape, num_centroids, out_channels, relu), LutLookupRule())
    batch, out_h, out_w, _ = codes_shape
    out = tensor(np.full((batch, out_channels, out_h, out_w), np.nan, np.float32))
    ex(tensor(codes), tensor(table), tensor(scale), tensor(bias), out)
    acc = ref.lookup_accumulate(codes.reshape(-1, num_codebooks), table)
    want = epilogue(acc, scale, bias, relu).reshape(batch, out_h, out_w, out_channels)
    assert_epilogue_close(out.numpy(), want.transpose(0, 3, 1, 2), acc, scale)


def test_conv_layer_end_to_end_matches_reference():
    """encode_conv2d -> lookup_conv2d with reference tables equals reference.lut_conv2d."""
    rng = np.random.default_rng(21)
    data_shape, kernel, strides, padding, dilation = (1, 3, 10, 7), (3, 3), (2, 2), (1, 0, 2, 1), (2, 2)
    out_channels, num_centroids, sub_len = 5, 16, 3
    num_codebooks = 3 * 9 // sub_len
    data = rng.standard_normal(data_shape).astype(np.float32)
    weight = rng.standard_normal((out_channels, 3, *kernel)).astype(np.float32)
    bias = rng.standard_normal(out_channels).astype(np.float32)
    centroids = rng.standard_normal((num_codebooks, num_centroids, sub_len)).astype(np.float32)
    rows, _ = ref.im2col_nchw(data, kernel, strides, padding, dilation)
    assert_no_near_ties(rows, centroids)

    geometry = Conv2dGeometry(kernel, strides, padding, dilation)
    out_h, out_w = geometry.output_hw(*data_shape[2:])
    codes_shape = (1, out_h, out_w, num_codebooks)
    enc = build(encode_conv2d_func(data_shape, geometry, num_codebooks, num_centroids, sub_len), LutEncodeRule())
    codes = run_encode(enc, data, centroids, codes_shape)
    tables_q, scale = ref.quantize_tables(ref.build_tables(centroids, weight.reshape(out_channels, -1).T))
    look = build(lookup_conv2d_func(codes_shape, num_centroids, out_channels, False), LutLookupRule())
    out = tensor(np.full((1, out_channels, out_h, out_w), np.nan, np.float32))
    look(tensor(codes), tensor(tables_q), tensor(np.full(out_channels, scale, np.float32)), tensor(bias), out)
    want = ref.lut_conv2d(data, centroids, weight, bias, strides, padding, dilation)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-5)


# --- rule dispatch -----------------------------------------------------------------------------


def test_rules_only_take_their_own_kinds():
    encode = encode_dense_func(4, 2, 16, 3)
    lookup = lookup_dense_func(4, 2, 16, 5, False)
    assert LutEncodeRule().apply(lookup, TARGET, False) is None
    assert LutLookupRule().apply(encode, TARGET, False) is None
    untagged = encode.without_attr("lut_tvm.kind")
    assert LutEncodeRule().apply(untagged, TARGET, False) is None
    assert LutLookupRule().apply(untagged, TARGET, False) is None


def test_kernel_tags():
    assert encode_dense_func(4, 2, 16, 3).attrs["lut_tvm.kind"] == "encode_dense"
    lookup = lookup_dense_func(4, 2, 16, 5, True)
    assert lookup.attrs["lut_tvm.kind"] == "lookup_dense" and int(lookup.attrs["lut_tvm.relu"]) == 1
    conv = lookup_conv2d_func((1, 2, 2, 3), 16, 4, False)
    assert conv.attrs["lut_tvm.kind"] == "lookup_conv2d" and int(conv.attrs["lut_tvm.relu"]) == 0
    assert int(conv.attrs["op_pattern"]) == 8  # kOpaque
    assert "global_symbol" not in conv.attrs
