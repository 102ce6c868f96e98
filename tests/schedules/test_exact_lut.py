"""LUT-NA's exact kernels (gather and byte-shuffle forms, dense rows and conv2d windows) under
their default schedule, against the NumPy integer reference: bit for bit, b = 2..8, odd shapes,
pruned groups. ISA tests run where the CPU has the ISA; ARM is compile-only (``tbl`` in the asm)."""

import numpy as np
import pytest
import tvm
from tvm import te, tirx

from lut_tvm.exact import reference as ref
from schedules.attrs import LUT_KIND_ATTR
from lut_tvm.reference import im2col_nchw
from lut_tvm.targets import host_cpu_flags
from lut_tvm.testing import loop_kinds as _loop_kinds
from schedules.exact_lut_compute import (
    EXACT_LUT_DENSE,
    exact_lut_accumulator_func,
    exact_lut_conv2d_func,
    exact_lut_dense_func,
)
from schedules.exact_shuffle_compute import chunk_layout, exact_lut_shuffle_func
from schedules.intrin.exact_shuffle import (
    EXACT_LLVM_SHUFFLE,
    EXACT_SHUFFLE_AVX2,
    EXACT_SHUFFLE_AVX512,
    EXACT_SHUFFLE_NEON,
    LLVM_PERMW,
    exact_shuffle_intrin_for_target,
)
from schedules.lut_compute import Conv2dGeometry
from schedules.rules.exact_lut import ExactLutRule


def _has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return any(line.startswith("flags") and " avx512f" in line for line in handle)
    except OSError:
        return False


TARGET = tvm.target.Target(
    {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2} if _has_avx512() else {"kind": "llvm"}
)


def _build(func):
    sch = ExactLutRule().apply(func, TARGET, False)
    assert sch is not None, "the rule must accept its own kernel"
    scheduled = sch.mod["main"]
    kinds = _loop_kinds(scheduled)
    assert tirx.ForKind.PARALLEL in kinds and tirx.ForKind.VECTORIZED in kinds, scheduled.script()
    assert str(scheduled.attrs[LUT_KIND_ATTR]) == EXACT_LUT_DENSE
    return tvm.compile(scheduled.with_attr("global_symbol", "main"), TARGET)


def _tensor(array):
    return tvm.runtime.tensor(np.ascontiguousarray(array))


def _pruned(rng, depth, cols, sparsity):
    weight = rng.standard_normal((depth, cols)).astype(np.float32)
    weight[rng.random(weight.shape) < sparsity] = 0.0
    return weight


def _run_accumulator(xq, packed):
    rows, depth = xq.shape
    exe = _build(exact_lut_accumulator_func(rows, depth, packed.bits, packed.max_groups,
                                            packed.out_features))
    out = _tensor(np.zeros((rows, packed.out_features), np.int32))
    exe(_tensor(xq), _tensor(packed.group_index), _tensor(packed.patterns), out)
    return out.numpy()


# (M, D, N, sparsity): odd D (tail group), N not a multiple of the vector lanes, M = 1.
CASES = {2: (5, 37, 13, 0.0), 3: (1, 23, 7, 0.7), 4: (6, 64, 33, 0.9), 5: (3, 9, 17, 0.5),
         6: (4, 50, 3, 0.3), 7: (2, 31, 40, 0.8), 8: (7, 45, 11, 0.6)}


@pytest.mark.parametrize("bits", sorted(CASES))
def test_exact_accumulator_equals_int_gemm(bits):
    rows, depth, cols, sparsity = CASES[bits]
    rng = np.random.default_rng(bits)
    wq, _ = ref.quantize_weight(_pruned(rng, depth, cols, sparsity), bits)
    wq[:, 0] = 0  # one column fully pruned
    wq[0, -1] = -(2 ** (bits - 1))  # the most negative b-bit value
    xq = rng.integers(-127, 128, size=(rows, depth)).astype(np.int8)
    xq[-1] = -127
    packed = ref.pack_exact(wq, bits)
    if sparsity > 0:
        assert packed.nonzero_groups.sum() < packed.nonzero_groups.size, "some groups are skipped"
    np.testing.assert_array_equal(_run_accumulator(xq, packed), ref.int_gemm(xq, wq))


def test_fully_pruned_weight_gives_zeros():
    packed = ref.pack_exact(np.zeros((10, 5), np.int8), 4)
    assert packed.max_groups == 1
    xq = np.full((3, 10), 127, np.int8)
    np.testing.assert_array_equal(_run_accumulator(xq, packed), np.zeros((3, 5), np.int32))


@pytest.mark.parametrize("bits,relu", [(2, False), (4, True), (8, False)])
def test_float_kernel_equals_quantized_layer(bits, relu):
    """Quantize in the kernel, exact LUT, int32 bias, dequantize: identical float32 outputs."""
    rng = np.random.default_rng(40 + bits)
    rows, depth, cols = 9, 50, 21
    weight = _pruned(rng, depth, cols, 0.5)
    bias = rng.standard_normal(cols).astype(np.float32)
    x = (rng.standard_normal((rows, depth)) * 3).astype(np.float32)
    x[0, :4] = [0.5, 1.5, -2.5, 1e4]  # ties and clipping once scaled by 1
    layer = ref.QuantizedDense.from_float(weight, bits, x[1:], bias)
    packed = ref.pack_exact(layer.wq, bits)
    exe = _build(exact_lut_dense_func(rows, depth, bits, packed.max_groups, cols,
                                      float(layer.act_scale), relu))
    out = _tensor(np.zeros((rows, cols), np.float32))
    exe(_tensor(x), _tensor(packed.group_index), _tensor(packed.patterns),
        _tensor(layer.out_scale), _tensor(layer.bias_q), out)
    np.testing.assert_array_equal(out.numpy(), layer(x, relu=relu))


def test_rule_ignores_other_functions():
    a = te.placeholder((4, 4), "float32", "a")
    b = te.compute((4, 4), lambda i, j: a[i, j] + 1.0, name="b")
    assert ExactLutRule().apply(te.create_prim_func([a, b]), TARGET, False) is None


# ------------------------------------------------------------------ byte-shuffle form, conv2d

AVX512 = {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}
AVX2 = {"kind": "llvm", "mcpu": "haswell"}
ARM = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
SHUFFLE_TARGETS = [
    pytest.param(AVX512, id="avx512", marks=pytest.mark.skipif(
        not {"avx512f", "avx512bw"} <= set(host_cpu_flags()), reason="no AVX-512BW")),
    pytest.param(AVX2, id="avx2", marks=pytest.mark.skipif(
        "avx2" not in host_cpu_flags(), reason="no AVX2")),
]


def _block_packed(wq, bits, word=False):
    packed = ref.pack_exact_blocks(wq, bits)
    chunks, per_chunk = chunk_layout(packed.max_groups)
    packed = packed.with_entries(chunks * per_chunk)
    if word:
        packed.patterns = packed.patterns.astype(np.int16)
    return packed


def _build_for(func, target):
    sch = ExactLutRule().apply(func, tvm.target.Target(target), False)
    assert sch is not None
    return sch, tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"),
                            tvm.target.Target(target))


def _run_shuffle(x, wq, bits, target, geometry=None, act_scale=1.0, word=False):
    """The shuffle kernel's float output with out_scale 1, bias 0: the int32 accumulator."""
    packed = _block_packed(wq, bits, word)
    cols = wq.shape[1]
    func = exact_lut_shuffle_func(x.shape, geometry, bits, packed.max_groups, cols, act_scale,
                                  word=word)
    _, exe = _build_for(func, target)
    rows = x.shape[0] if geometry is None else int(np.prod(_conv_out_shape(x.shape, geometry)))
    out = _tensor(np.zeros((rows, cols), np.float32))
    exe(_tensor(x), _tensor(packed.group_index), _tensor(packed.patterns),
        _tensor(np.ones(cols, np.float32)), _tensor(np.zeros(cols, np.int32)), out)
    return out.numpy()


def _conv_out_shape(input_shape, geometry):
    batch, _, height, width = input_shape
    return (batch, *geometry.output_hw(height, width))


def _int_inputs(rng, rows, depth):
    return rng.integers(-127, 128, size=(rows, depth)).astype(np.float32)


def test_block_layout_reference_equals_int_gemm():
    rng = np.random.default_rng(3)
    wq, _ = ref.quantize_weight(_pruned(rng, 45, 150, 0.6), 5)
    wq[:, 64:128] = 0  # one whole column block pruned
    wq[8:20, :] = 0  # whole groups pruned in every block
    packed = ref.pack_exact_blocks(wq, 5)
    assert packed.max_groups == ref.num_groups(45) - 3
    xq = rng.integers(-127, 128, size=(4, 45)).astype(np.int8)
    np.testing.assert_array_equal(ref.block_lut_matmul(xq, packed.with_entries(20)),
                                  ref.int_gemm(xq, wq))


@pytest.mark.parametrize("target", SHUFFLE_TARGETS)
@pytest.mark.parametrize("bits", sorted(CASES))
def test_shuffle_accumulator_equals_int_gemm(target, bits):
    rows, depth, cols, sparsity = CASES[bits]
    rows, cols = rows + 3, cols + 50  # more than one column block for some b
    rng = np.random.default_rng(100 + bits)
    wq, _ = ref.quantize_weight(_pruned(rng, depth, cols, sparsity), bits)
    wq[:, 0] = 0
    wq[0, -1] = -(2 ** (bits - 1))
    x = _int_inputs(rng, rows, depth)
    got = _run_shuffle(x, wq, bits, target)
    np.testing.assert_array_equal(got, ref.int_gemm(x.astype(np.int8), wq).astype(np.float32))


@pytest.mark.skipif(not {"avx512f", "avx512bw"} <= set(host_cpu_flags()), reason="no AVX-512BW")
@pytest.mark.parametrize("bits", sorted(CASES))
def test_word_permute_accumulator_equals_int_gemm(bits):
    rows, depth, cols, sparsity = CASES[bits]
    rng = np.random.default_rng(200 + bits)
    wq, _ = ref.quantize_weight(_pruned(rng, depth, cols + 70, sparsity), bits)
    wq[0, -1] = -(2 ** (bits - 1))
    x = _int_inputs(rng, rows + 2, depth)
    got = _run_shuffle(x, wq, bits, AVX512, word=True)
    np.testing.assert_array_equal(got, ref.int_gemm(x.astype(np.int8), wq).astype(np.float32))


@pytest.mark.parametrize("word", [False, True])
@pytest.mark.parametrize("value", [127, -127])
def test_shuffle_int16_chunks_do_not_overflow(value, word):
    """D = 300 (75 groups, two chunks); every table entry at |T| = 508 with the sign plane set."""
    bits, depth, cols = 8, 300, 70
    wq = np.full((depth, cols), -128, np.int8)
    x = np.full((3, depth), value, np.float32)
    target = AVX512 if {"avx512f", "avx512bw"} <= set(host_cpu_flags()) else {"kind": "llvm"}
    got = _run_shuffle(x, wq, bits, target, word=word)
    np.testing.assert_array_equal(got, np.full((3, cols), value * -128 * depth, np.float32))


def test_shuffle_without_a_shuffle_is_scalar_and_exact():
    rng = np.random.default_rng(7)
    wq, _ = ref.quantize_weight(_pruned(rng, 23, 9, 0.4), 4)
    x = _int_inputs(rng, 5, 23)
    got = _run_shuffle(x, wq, 4, {"kind": "llvm"})
    np.testing.assert_array_equal(got, ref.int_gemm(x.astype(np.int8), wq).astype(np.float32))


GEOMETRIES = [  # (input NCHW, O, kernel, strides, padding (t, l, b, r), dilation)
    ((2, 3, 9, 7), 5, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    ((1, 5, 11, 10), 13, (3, 2), (1, 2), (2, 0, 1, 1), (2, 1)),
    ((1, 2, 5, 5), 3, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
]


def _conv_case(index, bits):
    input_shape, out_ch, kernel, strides, padding, dilation = GEOMETRIES[index]
    rng = np.random.default_rng(index)
    x = (rng.standard_normal(input_shape) * 2).astype(np.float32)
    weight = _pruned(rng, input_shape[1] * kernel[0] * kernel[1], out_ch, 0.5)
    wq, _ = ref.quantize_weight(weight, bits)
    geometry = Conv2dGeometry(kernel, strides, padding, dilation)
    rows, _ = im2col_nchw(x, kernel, strides, padding, dilation)
    want = ref.int_gemm(ref.quantize_activations(rows, 0.05), wq).astype(np.float32)
    return x, wq, geometry, want


@pytest.mark.parametrize("index", range(len(GEOMETRIES)))
def test_conv2d_gather_kernel_equals_im2col_reference(index):
    bits = 3 + index
    x, wq, geometry, want = _conv_case(index, bits)
    packed = ref.pack_exact(wq, bits)
    func = exact_lut_conv2d_func(x.shape, geometry, bits, packed.max_groups, wq.shape[1], 0.05)
    exe = _build(func)
    out = _tensor(np.zeros(want.shape, np.float32))
    exe(_tensor(x), _tensor(packed.group_index), _tensor(packed.patterns),
        _tensor(np.ones(wq.shape[1], np.float32)), _tensor(np.zeros(wq.shape[1], np.int32)), out)
    np.testing.assert_array_equal(out.numpy(), want)


@pytest.mark.parametrize("target", SHUFFLE_TARGETS[:1])
@pytest.mark.parametrize("index", range(len(GEOMETRIES)))
def test_conv2d_shuffle_kernel_equals_im2col_reference(target, index):
    bits = 8 - index
    x, wq, geometry, want = _conv_case(index, bits)
    np.testing.assert_array_equal(_run_shuffle(x, wq, bits, target, geometry, 0.05,
                                               word=index == 0), want)


def _shuffle_asm(target, word=False):
    rng = np.random.default_rng(0)
    packed = _block_packed(ref.quantize_weight(_pruned(rng, 37, 70, 0.3), 4)[0], 4, word)
    func = exact_lut_shuffle_func((9, 37), None, 4, packed.max_groups, 70, 1.0, word=word)
    sch, exe = _build_for(func, target)
    return sch.mod.script(), exe.mod.inspect_source("asm")


@pytest.mark.parametrize("target, intrin, register", [(AVX512, EXACT_SHUFFLE_AVX512, "zmm"),
                                                      (AVX2, EXACT_SHUFFLE_AVX2, "ymm")])
def test_x86_shuffle_form_uses_vpshufb(target, intrin, register):
    """Compile only: the TIR calls the LLVM byte shuffle and the assembly has vpshufb."""
    script, asm = _shuffle_asm(target)
    assert EXACT_LLVM_SHUFFLE[intrin] in script
    assert any("vpshufb" in line and register in line for line in asm.splitlines())


def test_x86_word_form_uses_vpermw():
    script, asm = _shuffle_asm(AVX512, word=True)
    assert LLVM_PERMW in script
    assert any("vpermw" in line and "zmm" in line for line in asm.splitlines())


def test_arm64_shuffle_form_uses_tbl():
    script, asm = _shuffle_asm(ARM)
    assert EXACT_LLVM_SHUFFLE[EXACT_SHUFFLE_NEON] in script
    assert any(line.split()[:1] == ["tbl"] for line in asm.splitlines())


def test_shuffle_intrinsic_per_target():
    assert exact_shuffle_intrin_for_target(tvm.target.Target(AVX512)) == EXACT_SHUFFLE_AVX512
    assert exact_shuffle_intrin_for_target(tvm.target.Target(AVX2)) == EXACT_SHUFFLE_AVX2
    assert exact_shuffle_intrin_for_target(tvm.target.Target(ARM)) == EXACT_SHUFFLE_NEON
    assert exact_shuffle_intrin_for_target(tvm.target.Target({"kind": "llvm"})) is None
