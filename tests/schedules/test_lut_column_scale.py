"""Per-output-column table scales in the compiled LUT kernels, against the NumPy reference.

Tables come from ``reference.quantize_tables(..., "column")`` of weights whose columns differ in
size by up to 1000x; codes from the reference encode. The kernels' int32 accumulators must equal
the reference's exactly, and their outputs ``acc * scale[n] + bias[n]`` up to the float rounding
of that last multiply-add. Dense and conv, shuffle (AVX-512 / AVX2 targets, run where the CPU has
them) and gather forms, odd shapes; then whole layers through the rewrite passes and the default
schedules, with a per-column plan.
"""

import functools
import json
import re

import numpy as np
import pytest
import torch
import tvm

import lut_tvm
from lut_tvm import reference as ref
from lut_tvm.plan import LayerPlan, Plan, TableQuant
from lut_tvm.targets import host_cpu_flags
from lut_tvm.weights import LayerKind, fingerprint
from schedules.lut_compute import Conv2dGeometry
from schedules.lut_conv_shuffle_compute import lookup_conv2d_shuffle_func
from schedules.lut_kernels import lookup_conv2d_func, lookup_dense_func
from schedules.lut_shuffle_compute import lookup_dense_shuffle_func
from schedules.rules.lut_lookup import LutLookupRule
from schedules.rules.lut_lookup_shuffle import LutLookupShuffleRule
from relay_passes.lut_layer_builder import MIN_SHUFFLE_ROWS

FLAGS = frozenset(host_cpu_flags())
AVX512 = {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}
AVX2 = {"kind": "llvm", "mcpu": "haswell"}
PLAIN = {"kind": "llvm"}
NEEDS_AVX512 = pytest.mark.skipif(not {"avx512f", "avx512bw"} <= FLAGS, reason="no AVX-512BW")
NEEDS_AVX2 = pytest.mark.skipif("avx2" not in FLAGS, reason="no AVX2")
SHUFFLE_TARGETS = [pytest.param(AVX512, id="avx512", marks=NEEDS_AVX512),
                   pytest.param(AVX2, id="avx2", marks=NEEDS_AVX2)]
ALL_TARGETS = [*SHUFFLE_TARGETS, pytest.param(PLAIN, id="plain")]
K = 16


def uneven_weight(rng, depth, out_features):
    """``W [D, N]`` whose columns span three orders of magnitude."""
    return (rng.standard_normal((depth, out_features)) * np.logspace(-3, 0, out_features)).astype(np.float32)


def per_column_layer(rows, num_codebooks, sub_len, out_features, seed):
    """``(codes [M, C], int8 tables [C, K, N], scale [N], bias [N], reference y [M, N], acc [M, N])``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, num_codebooks * sub_len)).astype(np.float32)
    centroids = rng.standard_normal((num_codebooks, K, sub_len)).astype(np.float32)
    weight = uneven_weight(rng, num_codebooks * sub_len, out_features)
    bias = rng.standard_normal(out_features).astype(np.float32)
    tables_q, scale = ref.quantize_tables(ref.build_tables(centroids, weight), "column")
    codes = ref.encode(x, centroids)
    acc = ref.lookup_accumulate(codes, tables_q)
    want = ref.lut_matmul(x, centroids, weight, bias, "column")
    np.testing.assert_array_equal(want, ref.scaled_output(acc, scale, bias))
    # the per-layer scale would give other numbers (its small columns round to a few levels)
    assert np.abs(want - ref.lut_matmul(x, centroids, weight, bias)).max() > 1e-4
    return codes, tables_q, scale, bias, want, acc


def assert_scaled_close(got, want, acc, scale):
    """Equal up to the float32 rounding of ``acc * scale[n] + bias[n]`` (a fused multiply-add or not)."""
    atol = 1e-6 * max(1.0, float(np.abs(acc.astype(np.float64) * scale).max()))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=atol)


def _compile(func, rule, target):
    target = tvm.target.Target(target)
    sch = rule.apply(func, target, False)
    assert sch is not None
    return tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), target)


def _call(executable, *arrays, out):
    tensors = [tvm.runtime.tensor(np.ascontiguousarray(a), tvm.cpu()) for a in (*arrays, out)]
    executable["main"](*tensors)
    return tensors[-1].numpy()


@functools.cache
def _dense_kernel(form, rows, num_codebooks, out_features, target_json):
    target = json.loads(target_json)
    if form == "shuffle":
        return _compile(lookup_dense_shuffle_func(rows, num_codebooks, out_features), LutLookupShuffleRule(),
                        target)
    return _compile(lookup_dense_func(rows, num_codebooks, K, out_features, False), LutLookupRule(), target)


def run_dense(form, target, codes, tables_q, scale, bias):
    rows, num_codebooks = codes.shape
    out_features = tables_q.shape[2]
    ex = _dense_kernel(form, rows, num_codebooks, out_features, json.dumps(target, sort_keys=True))
    if form == "shuffle":
        codes, tables_q = codes.T, tables_q.transpose(2, 0, 1)
    out = np.full((rows, out_features), np.nan, np.float32)
    return _call(ex, codes, tables_q, scale.astype(np.float32), bias.astype(np.float32), out=out)


# (rows, C, V, N): rows off the 64-row tile, N off the 16-channel tile, C = 300 past one int16 chunk
DENSE_SHAPES = [(37, 7, 3, 13), (100, 24, 4, 48), (130, 300, 2, 16)]


@pytest.mark.parametrize("target", SHUFFLE_TARGETS)
@pytest.mark.parametrize("rows, num_codebooks, sub_len, out_features", DENSE_SHAPES)
def test_dense_shuffle_per_column(target, rows, num_codebooks, sub_len, out_features):
    codes, tables_q, scale, bias, want, acc = per_column_layer(rows, num_codebooks, sub_len, out_features, rows)
    ones, zeros = np.ones(out_features), np.zeros(out_features)
    np.testing.assert_array_equal(run_dense("shuffle", target, codes, tables_q, ones, zeros), acc)
    assert_scaled_close(run_dense("shuffle", target, codes, tables_q, scale, bias), want, acc, scale)


@pytest.mark.parametrize("target", ALL_TARGETS)
@pytest.mark.parametrize("rows, num_codebooks, sub_len, out_features", [(37, 7, 3, 13), (2, 300, 2, 17)])
def test_dense_gather_per_column(target, rows, num_codebooks, sub_len, out_features):
    codes, tables_q, scale, bias, want, acc = per_column_layer(rows, num_codebooks, sub_len, out_features, rows)
    ones, zeros = np.ones(out_features), np.zeros(out_features)
    np.testing.assert_array_equal(run_dense("gather", target, codes, tables_q, ones, zeros), acc)
    assert_scaled_close(run_dense("gather", target, codes, tables_q, scale, bias), want, acc, scale)


def per_column_conv(data_shape, out_channels, geometry, sub_len, seed):
    """``(codes [M, C], tables, scale, bias, reference NCHW y, acc [M, O], NCHW out shape)``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(data_shape).astype(np.float32)
    depth = data_shape[1] * geometry.kernel[0] * geometry.kernel[1]
    centroids = rng.standard_normal((depth // sub_len, K, sub_len)).astype(np.float32)
    weight_oihw = uneven_weight(rng, depth, out_channels).T.reshape(out_channels, data_shape[1], *geometry.kernel)
    bias = rng.standard_normal(out_channels).astype(np.float32)
    args = (geometry.strides, geometry.padding, geometry.dilation)
    want = ref.lut_conv2d(x, centroids, weight_oihw, bias, *args, granularity="column")
    assert np.abs(want - ref.lut_conv2d(x, centroids, weight_oihw, bias, *args)).max() > 1e-4
    rows, (batch, out_h, out_w) = ref.im2col_nchw(x, geometry.kernel, *args)
    tables_q, scale = ref.quantize_tables(ref.build_tables(centroids, weight_oihw.reshape(out_channels, -1).T),
                                          "column")
    codes = ref.encode(rows, centroids)
    acc = ref.lookup_accumulate(codes, tables_q)
    return codes, tables_q, scale, bias, want, acc, (batch, out_channels, out_h, out_w)


def _nchw(flat, out_shape):
    batch, channels, out_h, out_w = out_shape
    return flat.reshape(batch, out_h, out_w, channels).transpose(0, 3, 1, 2)


# (input NCHW, O, geometry, V)
CONV_CASES = [
    pytest.param((1, 5, 9, 7), 16, Conv2dGeometry((3, 3), (1, 1), (1, 1, 1, 1)), 9, id="odd_hw_O16"),
    pytest.param((3, 3, 11, 9), 48, Conv2dGeometry((3, 3), (2, 2), (1, 0, 2, 1)), 9, id="stride2_asympad_O48"),
    pytest.param((2, 12, 5, 5), 32, Conv2dGeometry((1, 1)), 4, id="1x1_V4_O32"),
]


@pytest.mark.parametrize("target", SHUFFLE_TARGETS)
@pytest.mark.parametrize("data_shape, out_channels, geometry, sub_len", CONV_CASES)
def test_conv_shuffle_per_column(target, data_shape, out_channels, geometry, sub_len):
    codes, tables_q, scale, bias, want, acc, out_shape = per_column_conv(data_shape, out_channels, geometry,
                                                                         sub_len, sum(data_shape))
    ex = _compile(lookup_conv2d_shuffle_func(out_shape, codes.shape[1]), LutLookupShuffleRule(), target)
    table = tables_q.transpose(2, 0, 1)
    out = np.full(out_shape, np.nan, np.float32)
    exact = _call(ex, codes.T, table, np.ones(out_channels, np.float32), np.zeros(out_channels, np.float32),
                  out=out)
    np.testing.assert_array_equal(exact, _nchw(acc, out_shape))
    got = _call(ex, codes.T, table, scale, bias, out=out)
    assert_scaled_close(got, want, acc, scale)


@pytest.mark.parametrize("target", ALL_TARGETS)
@pytest.mark.parametrize("data_shape, out_channels, geometry, sub_len",
                         [CONV_CASES[1], pytest.param((2, 2, 6, 5), 13, Conv2dGeometry((3, 2), (1, 2), (1, 0, 2, 1),
                                                                                        (2, 1)), 3, id="O13")])
def test_conv_gather_per_column(target, data_shape, out_channels, geometry, sub_len):
    codes, tables_q, scale, bias, want, acc, out_shape = per_column_conv(data_shape, out_channels, geometry,
                                                                         sub_len, sum(data_shape))
    batch, _, out_h, out_w = out_shape
    codes_shape = (batch, out_h, out_w, codes.shape[1])
    ex = _compile(lookup_conv2d_func(codes_shape, K, out_channels, False), LutLookupRule(), target)
    got = _call(ex, codes.reshape(codes_shape), tables_q, scale, bias, out=np.full(out_shape, np.nan, np.float32))
    assert_scaled_close(got, want, acc, scale)


# --------------------------------------------------------------------------- through the passes


def _compile_planned(model, layer, x, target, dump_dir):
    """``lut_tvm.compile`` of a torch ``model`` with a one-layer plan: ``(compiled, LUT kernel kinds)``."""
    compiled = lut_tvm.compile(model, Plan([layer]), target=target, example_inputs=(x,), dump_ir=dump_dir)
    assert compiled.info.lut_layers == [layer.name]
    scheduled = max(dump_dir.glob("*scheduled*")).read_text()
    return compiled, set(re.findall(r'"lut_tvm\.kind": "(\w+)"', scheduled))


@pytest.mark.parametrize("target", ALL_TARGETS)
@pytest.mark.parametrize("rows, depth, out_features", [(100, 48, 48), (21, 36, 13)])
def test_planned_dense_layer_per_column(target, rows, depth, out_features, tmp_path):
    """Linear + ReLU with a per-column plan through lut_tvm.compile (rewrite, epilogue fusion,
    default schedules) equals the reference."""
    rng = np.random.default_rng(rows)
    weight = uneven_weight(rng, depth, out_features)
    bias = rng.standard_normal(out_features).astype(np.float32)
    centroids = rng.standard_normal((depth // 4, K, 4)).astype(np.float32)
    x = rng.standard_normal((rows, depth)).astype(np.float32)
    assert ref.encode_margin(x, centroids).min() > 1e-4  # no near-tie: the kernels must pick the same codes
    layer = LayerPlan("0", LayerKind.DENSE, weight.shape, fingerprint(weight), centroids,
                      table_quant=TableQuant.INT8_PER_COLUMN)
    model = torch.nn.Sequential(torch.nn.Linear(depth, out_features), torch.nn.ReLU()).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(weight.T))
        model[0].bias.copy_(torch.from_numpy(bias))
    compiled, kinds = _compile_planned(model, layer, x, target, tmp_path)
    shuffle = target != PLAIN and rows >= MIN_SHUFFLE_ROWS
    assert ("lookup_dense_shuffle" in kinds) == shuffle and ("lookup_dense" in kinds) == (not shuffle)
    got = compiled(x)
    want = np.maximum(ref.lut_matmul(x, centroids, weight, bias, "column"), 0)
    assert (want == 0).any() and (want > 0).any()
    tables_q, scale = ref.quantize_tables(ref.build_tables(centroids, weight), "column")
    assert_scaled_close(got, want, ref.lookup_accumulate(ref.encode(x, centroids), tables_q), scale)


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_planned_conv_layer_per_column(target, tmp_path):
    rng = np.random.default_rng(7)
    data_shape, out_channels = (2, 4, 9, 7), 32
    weight = uneven_weight(rng, 4 * 9, out_channels).T.reshape(out_channels, 4, 3, 3).copy()
    bias = rng.standard_normal(out_channels).astype(np.float32)
    centroids = rng.standard_normal((4, K, 9)).astype(np.float32)
    x = rng.standard_normal(data_shape).astype(np.float32)
    rows, _ = ref.im2col_nchw(x, (3, 3), (1, 1), (1, 1, 1, 1))
    assert ref.encode_margin(rows, centroids).min() > 1e-4
    layer = LayerPlan("0", LayerKind.CONV2D, weight.shape, fingerprint(weight), centroids,
                      table_quant=TableQuant.INT8_PER_COLUMN)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, out_channels, 3, padding=1)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(weight))
        model[0].bias.copy_(torch.from_numpy(bias))
    compiled, kinds = _compile_planned(model, layer, x, target, tmp_path)
    assert ("lookup_conv2d_shuffle" in kinds) == (target != PLAIN), kinds
    got = compiled(x)
    want = ref.lut_conv2d(x, centroids, weight, bias, padding=(1, 1, 1, 1), granularity="column")
    tables_q, scale = ref.quantize_tables(ref.build_tables(centroids, weight.reshape(out_channels, -1).T), "column")
    assert_scaled_close(got, want, ref.lookup_accumulate(ref.encode(rows, centroids), tables_q), scale)
