"""The conv2d shuffle path (row encode straight from NCHW windows, codes [C, N*OH*OW], byte-shuffle
lookup writing NCHW) under its rules, against the NumPy reference (im2col + encode + lookup).

Runs where the CPU has the ISA (a /proc/cpuinfo probe); ARM is compile-only (``tbl`` in the asm).
"""

import functools
import json

import numpy as np
import pytest
import tvm
from tvm import s_tir

from lut_tvm import reference as ref
from lut_tvm.targets import host_cpu_flags
from lut_tvm.testing import assert_no_near_ties, check_codes
from lut_tvm.tuning.space import rule_schedules
from schedules.intrin.lut_shuffle import (
    LLVM_SHUFFLE,
    LUT16_SHUFFLE_AVX2,
    LUT16_SHUFFLE_AVX512,
    LUT16_SHUFFLE_NEON,
)
from schedules.lut_compute import Conv2dGeometry
from schedules.lut_conv_shuffle_compute import (
    ENCODE_CONV2D_ROWS,
    INPUT_LAYOUTS,
    LOOKUP_CONV2D_SHUFFLE,
    default_input_layout,
    encode_conv2d_rows_func,
    lookup_conv2d_shuffle_func,
)
from schedules.lut_shuffle_compute import lookup_dense_shuffle_func
from schedules.rules import LUT_RULES
from schedules.rules.lut_encode_rows import LutEncodeRowsRule
from schedules.rules.lut_lookup_shuffle import LutLookupShuffleRule

FLAGS = frozenset(host_cpu_flags())
AVX512 = {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}
AVX2 = {"kind": "llvm", "mcpu": "haswell"}
ARM = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
NEEDS_AVX512 = pytest.mark.skipif(not {"avx512f", "avx512bw"} <= FLAGS, reason="no AVX-512BW")
NEEDS_AVX2 = pytest.mark.skipif("avx2" not in FLAGS, reason="no AVX2")

# (input NCHW, out channels, kernel, strides, padding (top, left, bottom, right), dilation)
CASES = [
    pytest.param(((1, 5, 9, 7), 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)), id="odd_hw_pad1_O16"),
    pytest.param(((3, 3, 11, 9), 48, (3, 3), (2, 2), (1, 0, 2, 1), (1, 1)), id="stride2_asympad_b3_O48"),
    pytest.param(((1, 7, 10, 13), 16, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)), id="dilation2_C7"),
    pytest.param(((3, 12, 5, 5), 48, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1)), id="1x1_stride2_V4"),
]


def _compile(func, rule, target):
    sch = rule.apply(func, tvm.target.Target(target), False)
    assert sch is not None
    return tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), tvm.target.Target(target))


@functools.lru_cache(maxsize=None)
def _built_encode(data_shape, geometry, num_codebooks, sub_len, input_layout, target_json):
    func = encode_conv2d_rows_func(data_shape, geometry, num_codebooks, 16, sub_len, input_layout)
    return _compile(func, LutEncodeRowsRule(), json.loads(target_json))


@functools.lru_cache(maxsize=None)
def _built_lookup(out_shape, num_codebooks, relu, target_json):
    func = lookup_conv2d_shuffle_func(out_shape, num_codebooks, relu)
    return _compile(func, LutLookupShuffleRule(), json.loads(target_json))


def _call(executable, *arrays):
    tensors = [tvm.runtime.tensor(np.ascontiguousarray(a), tvm.cpu()) for a in arrays]
    executable["main"](*tensors)
    return tensors[-1].numpy()


def _conv_inputs(data_shape, out_channels, kernel, strides, padding, dilation, seed=0):
    """Input, centroids (V = kh*kw, or 4 for 1x1), INT8-range tables and the im2col rows."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(data_shape).astype(np.float32)
    sub_len = kernel[0] * kernel[1] if kernel != (1, 1) else 4
    depth = data_shape[1] * kernel[0] * kernel[1]
    centroids = rng.standard_normal((depth // sub_len, 16, sub_len)).astype(np.float32)
    tables = rng.integers(-127, 128, (depth // sub_len, 16, out_channels)).astype(np.int8)
    rows, (batch, out_h, out_w) = ref.im2col_nchw(x, kernel, strides, padding, dilation)
    return x, centroids, tables, rows, (batch, out_channels, out_h, out_w)


def run_path(case, target, input_layout=None, scale=None, bias=None, relu=False):
    """Encode + lookup of the shuffle path; returns (codes [M, C], NCHW output)."""
    data_shape, out_channels, kernel, strides, padding, dilation = case
    x, centroids, tables, _, out_shape = _conv_inputs(*case)
    num_codebooks, _, sub_len = centroids.shape
    geometry = Conv2dGeometry(kernel, strides, padding, dilation)
    target_json = json.dumps(target, sort_keys=True)
    norms = (centroids.astype(np.float64) ** 2).sum(-1).astype(np.float32)
    rows = out_shape[0] * out_shape[2] * out_shape[3]
    encode = _built_encode(data_shape, geometry, num_codebooks, sub_len, input_layout, target_json)
    codes = _call(encode, x, centroids, norms, np.zeros((num_codebooks, rows), np.uint8))
    scale = np.ones(out_channels, np.float32) if scale is None else scale
    bias = np.zeros(out_channels, np.float32) if bias is None else bias
    lookup = _built_lookup(out_shape, num_codebooks, relu, target_json)
    out = _call(lookup, codes, tables.transpose(2, 0, 1), scale, bias, np.zeros(out_shape, np.float32))
    return codes.T, out


def reference_acc_nchw(case):
    """The reference's exact int32 accumulator, laid out NCHW; asserts the data has no near-tie."""
    _, centroids, tables, rows, (batch, out_channels, out_h, out_w) = _conv_inputs(*case)
    assert_no_near_ties(rows, centroids)
    codes = ref.encode(rows, centroids)
    acc = ref.lookup_accumulate(codes, tables)
    return codes, acc.reshape(batch, out_h, out_w, out_channels).transpose(0, 3, 1, 2)


@NEEDS_AVX512
@pytest.mark.parametrize("case", CASES)
def test_codes_and_accumulator_exact_avx512(case):
    """scale = 1, bias = 0: codes equal the reference's and the output is its int32 accumulator."""
    want_codes, want_acc = reference_acc_nchw(case)
    codes, out = run_path(case, AVX512)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(out, want_acc.astype(np.float32))


@NEEDS_AVX512
@pytest.mark.parametrize("input_layout", INPUT_LAYOUTS)
def test_every_input_layout_exact(input_layout):
    """Each way of reading the windows (in place, padded copy, shifted copies) is exact
    (64 rows: whole 16-row tiles, which the in-place reads need to compile fast)."""
    case = ((2, 3, 8, 7), 16, (3, 3), (1, 2), (1, 2, 1, 0), (1, 1))
    want_codes, want_acc = reference_acc_nchw(case)
    codes, out = run_path(case, AVX512, input_layout)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(out, want_acc.astype(np.float32))


def test_default_input_layout_reads_in_place_for_whole_tiles():
    geometry = Conv2dGeometry((3, 3), padding=(1, 1, 1, 1))
    assert default_input_layout((1, 64, 32, 32), geometry) == "direct"
    assert default_input_layout((72, 32, 4, 4), geometry) == "direct"
    assert default_input_layout((1, 5, 9, 7), geometry) == "shifted"  # 63 rows
    # Tiles straddle output rows (OW = 20, 10) and the rows are whole lcm(16, OW) chunks.
    assert default_input_layout((16, 16, 20, 20), geometry) == "padded"
    assert default_input_layout((16, 32, 10, 10), geometry) == "padded"
    assert default_input_layout((1, 3, 10, 10), geometry) == "shifted"  # 100 rows: no chunk


# Chunked window copies (tiles straddle output rows; M a multiple of lcm(16, OW)):
# (input NCHW, kernel, strides, padding, dilation, V).
CHUNK_CASES = [
    pytest.param(((4, 3, 10, 10), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 9), id="OW10_C3"),
    pytest.param(((4, 7, 11, 10), (3, 3), (2, 1), (2, 2, 2, 2), (2, 2), 9), id="dil2_strideh2_C7"),
    pytest.param(((8, 1, 9, 13), (3, 3), (2, 2), (1, 0, 2, 1), (1, 1), 9), id="stride2_oddhw_C1"),
    pytest.param(((16, 44, 5, 5), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 4), id="1x1_OW5_C11"),
]


def _encode_codes(case, target, tunable_seed=None):
    """Codes [M, C] of the default conv encode (chunked when tunable_seed is None, else the
    tunable schedule replayed under that seed) and the reference's im2col rows + centroids."""
    data_shape, kernel, strides, padding, dilation, sub_len = case
    geometry = Conv2dGeometry(kernel, strides, padding, dilation)
    rng = np.random.default_rng(sum(data_shape))
    x = rng.standard_normal(data_shape).astype(np.float32)
    num_codebooks = data_shape[1] * kernel[0] * kernel[1] // sub_len
    centroids = rng.standard_normal((num_codebooks, 16, sub_len)).astype(np.float32)
    norms = (centroids.astype(np.float64) ** 2).sum(-1).astype(np.float32)
    func = encode_conv2d_rows_func(data_shape, geometry, num_codebooks, 16, sub_len)
    assert str(func.attrs["lut_tvm.input_layout"]) == "padded"
    target = tvm.target.Target(target)
    sch = LutEncodeRowsRule().apply(func, target, tunable_seed is not None)
    _assert_chunked(sch, geometry.output_hw(*data_shape[2:])[1])
    if tunable_seed is not None:
        assert "sample_categorical" in str(sch.trace)
        replay = s_tir.Schedule(func, seed=tunable_seed)
        s_tir.schedule.Trace(sch.trace.insts, {}).apply_to_schedule(replay, remove_postproc=True)
        sch = replay
    ex = tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), target)
    rows, _ = ref.im2col_nchw(x, kernel, strides, padding, dilation)
    codes = _call(ex, x, centroids, norms, np.zeros((num_codebooks, rows.shape[0]), np.uint8))
    return codes.T, rows, centroids


def _assert_chunked(sch, out_w):
    """The windows are copied per chunk, one vectorized loop of OW positions per output row."""
    copy_loop = sch.get(sch.get_loops(sch.get_sblock("encode_rows_xt"))[-1])
    assert copy_loop.kind == tvm.tirx.ForKind.VECTORIZED and int(copy_loop.extent) == out_w


@NEEDS_AVX512
@pytest.mark.parametrize("case", CHUNK_CASES)
def test_chunked_window_copy_exact(case):
    """Codes are the nearest centroids (either one at a near-tie: ``check_codes``): stride,
    dilation, asymmetric padding, C = 1 and 11, V = 9 and 4."""
    codes, rows, centroids = _encode_codes(case, AVX512)
    assert codes.dtype == np.uint8
    check_codes(codes, rows, centroids)


@NEEDS_AVX2
def test_chunked_window_copy_exact_avx2():
    codes, rows, centroids = _encode_codes(CHUNK_CASES[0].values[0], AVX2)
    np.testing.assert_array_equal(codes, ref.encode(rows, centroids))


@NEEDS_AVX512
@pytest.mark.parametrize("seed", [1, 4])
def test_tunable_chunk_size_replays_exact(seed):
    """tunable=True samples the chunk size (whole lcm(16, OW) blocks); a replay is still exact."""
    case = ((16, 2, 10, 10), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 9)  # 1600 rows: 20 blocks
    codes, rows, centroids = _encode_codes(case, AVX512, tunable_seed=seed)
    np.testing.assert_array_equal(codes, ref.encode(rows, centroids))


@NEEDS_AVX2
def test_accumulator_exact_avx2():
    case = ((3, 3, 11, 9), 48, (3, 3), (2, 2), (1, 0, 2, 1), (1, 1))
    want_codes, want_acc = reference_acc_nchw(case)
    codes, out = run_path(case, AVX2)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(out, want_acc.astype(np.float32))


@NEEDS_AVX512
@pytest.mark.parametrize("relu", [False, True])
def test_scale_bias_relu_nchw(relu):
    case = ((1, 5, 9, 7), 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    rng = np.random.default_rng(5)
    scale = rng.uniform(0.001, 0.02, 16).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    _, out = run_path(case, AVX512, scale=scale, bias=bias, relu=relu)
    _, acc = reference_acc_nchw(case)
    want = acc.astype(np.float32) * scale[None, :, None, None] + bias[None, :, None, None]
    if relu:
        want = np.maximum(want, 0.0)
        assert (out == 0).any() and (out > 0).any()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_x86_asm_has_vpshufb():
    """Compile only: the scheduled lookup calls the AVX-512 shuffle and the asm has vpshufb on zmm."""
    func = lookup_conv2d_shuffle_func((3, 48, 6, 5), 11)
    sch = LutLookupShuffleRule().apply(func, tvm.target.Target(AVX512), False)
    assert LLVM_SHUFFLE[LUT16_SHUFFLE_AVX512] in sch.mod.script()
    asm = tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"),
                      tvm.target.Target(AVX512)).mod.inspect_source("asm")
    assert any("vpshufb" in line and "zmm" in line for line in asm.splitlines())


def test_arm64_asm_has_tbl():
    """Compile only (cross): the NEON build of the conv lookup uses tbl; the encode builds too."""
    func = lookup_conv2d_shuffle_func((1, 16, 9, 7), 5, relu=True)
    sch = LutLookupShuffleRule().apply(func, tvm.target.Target(ARM), False)
    assert LLVM_SHUFFLE[LUT16_SHUFFLE_NEON] in sch.mod.script()
    asm = tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"),
                      tvm.target.Target(ARM)).mod.inspect_source("asm")
    assert any(line.split()[:1] == ["tbl"] for line in asm.splitlines())
    encode = encode_conv2d_rows_func((1, 5, 9, 7), Conv2dGeometry((3, 3), padding=(1, 1, 1, 1)), 5, 16, 9)
    assert LutEncodeRowsRule().apply(encode, tvm.target.Target(ARM), False) is not None


def test_kinds_are_tagged_and_rules_pick_them():
    encode = encode_conv2d_rows_func((1, 2, 4, 4), Conv2dGeometry((1, 1)), 1, 16, 2)
    lookup = lookup_conv2d_shuffle_func((1, 16, 4, 4), 1)
    assert str(encode.attrs["lut_tvm.kind"]) == ENCODE_CONV2D_ROWS
    assert str(lookup.attrs["lut_tvm.kind"]) == LOOKUP_CONV2D_SHUFFLE
    target = tvm.target.Target(AVX512)
    assert LutLookupShuffleRule().apply(encode, target, False) is None
    assert LutEncodeRowsRule().apply(lookup, target, False) is None


def _replay_tunable_conv_lookup(case, seed, parallel_axis):
    """The AVX-512 conv lookup scheduled with tunable=True, its trace replayed under ``seed``:
    asserts the replay tensorizes and (where the CPU has AVX-512BW) is exact; returns the
    tunable schedule."""
    _, _, tables, _, out_shape = _conv_inputs(*case)
    func = lookup_conv2d_shuffle_func(out_shape, tables.shape[0])
    target = tvm.target.Target(AVX512)
    sch = LutLookupShuffleRule(parallel_axis=parallel_axis).apply(func, target, True)
    replay = s_tir.Schedule(func, seed=seed)
    s_tir.schedule.Trace(sch.trace.insts, {}).apply_to_schedule(replay, remove_postproc=True)
    assert LLVM_SHUFFLE[LUT16_SHUFFLE_AVX512] in replay.mod.script()
    if {"avx512f", "avx512bw"} <= FLAGS:
        codes, acc = reference_acc_nchw(case)
        ex = tvm.compile(replay.mod["main"].with_attr("global_symbol", "main"), target)
        ones, zeros = np.ones(out_shape[1], np.float32), np.zeros(out_shape[1], np.float32)
        out = _call(ex, codes.T, tables.transpose(2, 0, 1), ones, zeros, np.zeros(out_shape, np.float32))
        np.testing.assert_array_equal(out, acc.astype(np.float32))
    return sch


@pytest.mark.parametrize("seed, parallel_axis", [(2, "tiles"), (5, "tiles"), (3, "rows")])
def test_tunable_conv_lookup_replays_and_stays_exact(seed, parallel_axis):
    """tunable=True samples the tiles; a replay under another seed still tensorizes and is exact."""
    sch = _replay_tunable_conv_lookup(((3, 3, 11, 9), 48, (3, 3), (2, 2), (1, 0, 2, 1), (1, 1)),
                                      seed, parallel_axis)
    assert "sample_categorical" in str(sch.trace)


def test_design_space_lists_the_conv_variants():
    """MetaSchedule's space for the conv kernels: the rule (AVX-512 and AVX2 views) plus variants
    (encode: chunked window copies and in-place reads; lookup: rows-parallel), each once."""
    target = tvm.target.Target(AVX512)
    geometry = Conv2dGeometry((3, 3), padding=(1, 1, 1, 1))
    padded = encode_conv2d_rows_func((16, 5, 10, 10), geometry, 5, 16, 9)  # tiles straddle rows
    shifted = encode_conv2d_rows_func((1, 5, 9, 7), geometry, 5, 16, 9)  # in place = the default
    lookup = lookup_conv2d_shuffle_func((1, 16, 9, 7), 5)
    for func, count in ((padded, 4), (shifted, 3), (lookup, 3)):
        spaces = rule_schedules(s_tir.Schedule(func), target, LUT_RULES, True)
        assert len(spaces) == count
        assert len({str(sch.trace) for sch in spaces}) == count


# One codebook (C = 1): a 1-channel 3x3 stem conv with V = 9, batch 16 at 8x8 (the speed table's
# "digits conv1"). The codebook axis has extent 1, so compute_at drops its loop; the rule used to
# take the channel loop for the row loop there and tensorize failed (ScheduleError).
STEM_CASES = [
    pytest.param(((16, 1, 8, 8), 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)), id="stem_C1_O16"),
    pytest.param(((16, 1, 8, 8), 32, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)), id="stem_C1_O32"),
]


@NEEDS_AVX512
@pytest.mark.parametrize("case", STEM_CASES)
def test_one_codebook_conv_exact_avx512(case):
    """C = 1: codes equal the reference's and the output is its int32 accumulator."""
    want_codes, want_acc = reference_acc_nchw(case)
    assert want_codes.shape[1] == 1
    codes, out = run_path(case, AVX512)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(out, want_acc.astype(np.float32))


@NEEDS_AVX512
@pytest.mark.parametrize("rows, num_codebooks, out_features", [(64, 1, 16), (100, 1, 48), (100, 3, 16)])
def test_one_and_three_codebook_dense_exact_avx512(rows, num_codebooks, out_features):
    """Dense lookups with C = 1 (a Linear with in_features = 16, V = 16; 100 rows: padded) and
    an odd C = 3 equal the reference's int32 accumulator."""
    rng = np.random.default_rng(num_codebooks)
    codes = rng.integers(0, 16, (rows, num_codebooks)).astype(np.uint8)
    tables = rng.integers(-127, 128, (num_codebooks, 16, out_features)).astype(np.int8)
    func = lookup_dense_shuffle_func(rows, num_codebooks, out_features)
    ex = _compile(func, LutLookupShuffleRule(), AVX512)
    ones, zeros = np.ones(out_features, np.float32), np.zeros(out_features, np.float32)
    out = _call(ex, codes.T, tables.transpose(2, 0, 1), ones, zeros, np.zeros((rows, out_features), np.float32))
    np.testing.assert_array_equal(out, ref.lookup_accumulate(codes, tables).astype(np.float32))


@pytest.mark.parametrize("target, intrin", [(AVX512, LUT16_SHUFFLE_AVX512), (AVX2, LUT16_SHUFFLE_AVX2),
                                            (ARM, LUT16_SHUFFLE_NEON)])
@pytest.mark.parametrize("rule_args", [{}, {"n_tile": 1}, {"parallel_axis": "rows"}])
def test_one_codebook_tensorizes_everywhere(target, intrin, rule_args):
    """Schedule only: C = 1 conv and dense lookups tensorize on every shuffle target, also with a
    1-channel tile (channel and codebook loops both dropped) and row-parallel tiles."""
    target = tvm.target.Target(target)
    for func in (lookup_conv2d_shuffle_func((16, 32, 8, 8), 1, relu=True),
                 lookup_dense_shuffle_func(100, 1, 16)):
        sch = LutLookupShuffleRule(**rule_args).apply(func, target, False)
        assert LLVM_SHUFFLE[intrin] in sch.mod.script()


@pytest.mark.parametrize("seed, parallel_axis", [(2, "tiles"), (3, "rows")])
def test_tunable_one_codebook_conv_replays_and_stays_exact(seed, parallel_axis):
    """tunable=True at C = 1: a replay under another seed still tensorizes and is exact."""
    case = STEM_CASES[1].values[0]
    assert _conv_inputs(*case)[2].shape[0] == 1
    _replay_tunable_conv_lookup(case, seed, parallel_axis)
