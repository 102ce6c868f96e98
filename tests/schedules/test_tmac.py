"""The exact T-MAC kernel (``schedules.tmac_compute`` + ``schedules.rules.tmac``) against the NumPy
integer GEMM, bit for bit: 1-8 bits and ternary, M = 1, 3, 128, odd K and N, AVX2 ymm and AVX-512BW
zmm (each where the CPU has it; compile-only checks of the assembly run everywhere, the arm64 NEON
``tbl`` form's too: it runs on the emulated device, ``tests/lut_tvm/deploy/test_remote_tmac.py``)."""

import numpy as np
import pytest
import tvm
from tvm import te

from lut_tvm.exact import reference as ref
from lut_tvm.exact.reference.tmac import pack_tmac
from lut_tvm.reference import im2col_nchw
from lut_tvm.targets import host_cpu_flags
from lut_tvm.testing import random_low_bit_weights
from lut_tvm.targets import TARGETS as NAMED_TARGETS
from schedules.intrin.tmac import (LLVM_PERMW, TMAC_AVX2, TMAC_AVX512, TMAC_LLVM_SHUFFLE, TMAC_NEON,
                                   TMAC_PERMW_AVX512, tmac_form_for_target, tmac_intrin_for_target)
from schedules.lut_compute import Conv2dGeometry
from schedules.rules.tmac import TmacRule
from schedules.tmac_compute import tmac_func

AVX512 = {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}
AVX2 = {"kind": "llvm", "mcpu": "haswell"}
NO_SHUFFLE = {"kind": "llvm", "mcpu": "x86-64-v2"}
ARM64 = NAMED_TARGETS["arm64"]
TARGETS = [
    pytest.param((AVX512, 64, False), id="avx512", marks=pytest.mark.skipif(
        not {"avx512f", "avx512bw"} <= set(host_cpu_flags()), reason="no AVX-512BW")),
    pytest.param((AVX512, 64, True), id="avx512-vpermw", marks=pytest.mark.skipif(
        not {"avx512f", "avx512bw"} <= set(host_cpu_flags()), reason="no AVX-512BW")),
    pytest.param((AVX2, 32, False), id="avx2", marks=pytest.mark.skipif(
        "avx2" not in host_cpu_flags(), reason="no AVX2")),
]



def _build(func, target):
    sch = TmacRule().apply(func, tvm.target.Target(target), False)
    assert sch is not None, "the rule must accept its own kernel"
    return sch, tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), tvm.target.Target(target))


def _run(x, wq, bits, target, geometry=None, out_scale=None, bias=None, relu=False):
    """The kernel's ``[M, N]`` float output (out_scale 1, bias 0 by default: the int32 GEMM)."""
    target, lanes, word = target
    packed = pack_tmac(wq, bits, lanes, word)
    cols = wq.shape[1]
    func = tmac_func(x.shape, geometry, bits, packed.padded_groups, cols, lanes, 1.0, relu, word)
    _, exe = _build(func, target)
    scale = np.ones(cols, np.float32) if out_scale is None else out_scale
    offset = np.zeros(cols, np.int32) if bias is None else bias
    rows = x.shape[0] if geometry is None else \
        x.shape[0] * int(np.prod(geometry.output_hw(*x.shape[2:])))
    out = tvm.runtime.tensor(np.zeros((rows, cols), np.float32))
    exe(*(tvm.runtime.tensor(np.ascontiguousarray(a)) for a in (x, packed.nibbles, scale, offset)), out)
    return out.numpy()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8, "ternary"])
@pytest.mark.parametrize("rows,depth,cols", [(1, 45, 33), (3, 37, 70), (128, 29, 65)])
def test_tmac_kernel_equals_int_gemm(target, bits, rows, depth, cols):
    rng = np.random.default_rng(depth * cols + rows)
    wq, stored = random_low_bit_weights(rng, bits, (depth, cols))
    xq = rng.integers(-127, 128, (rows, depth)).astype(np.float32)
    np.testing.assert_array_equal(_run(xq, wq, stored, target), ref.int_gemm(xq.astype(np.int8), wq))


@pytest.mark.parametrize("target", TARGETS)
def test_int16_chunks_hold_the_worst_case(target):
    """All activations 127 and all weights -2^(b-1): every look-up is -508 in the sign plane,
    65 groups span two int16 chunks."""
    xq = np.full((2, 260), 127, np.float32)
    wq = np.full((260, 40), -8, np.int8)
    np.testing.assert_array_equal(_run(xq, wq, 4, target), ref.int_gemm(xq.astype(np.int8), wq))


@pytest.mark.parametrize("target", TARGETS)
def test_float_epilogue_and_conv_windows(target):
    """Quantized float input, bias and ReLU (one float multiply, as the reference); conv2d windows."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32) * 3
    geometry = Conv2dGeometry(kernel=(3, 3), strides=(1, 2), padding=(1, 1, 1, 1), dilation=(1, 1))
    wq, _ = random_low_bit_weights(rng, 3, (27, 19))
    rows = im2col_nchw(x, geometry.kernel, geometry.strides, geometry.padding, geometry.dilation)[0]
    xq = ref.quantize_activations(rows, 1.0)
    scale = (rng.random(19) + 0.5).astype(np.float32)
    bias = rng.integers(-300, 300, 19).astype(np.int32)
    want = ref.dequantize(ref.int_gemm(xq, wq), scale, bias, relu=True)
    got = _run(x, wq, 3, target, geometry, scale, bias, relu=True)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("target, intrin, register", [(AVX512, TMAC_AVX512, "zmm"), (AVX2, TMAC_AVX2, "ymm")])
def test_assembly_uses_vpshufb_and_unpack(target, intrin, register):
    """Compile only: the TIR calls the byte shuffle, the assembly has vpshufb and vpunpcklbw."""
    rng = np.random.default_rng(0)
    lanes = 64 if register == "zmm" else 32
    packed = pack_tmac(random_low_bit_weights(rng, 2, (37, 70))[0], 2, lanes)
    sch, exe = _build(tmac_func((9, 37), None, 2, packed.padded_groups, 70, lanes, 1.0), target)
    asm = exe.mod.inspect_source("asm").splitlines()
    assert TMAC_LLVM_SHUFFLE[intrin] in sch.mod.script()
    for op in ("vpshufb", "vpunpcklbw", "vpunpckhbw"):
        assert any(op in line and register in line for line in asm), op


def test_arm64_assembly_uses_tbl_and_zip():
    """Cross-compile only: the NEON form calls ``tbl`` on 16-byte tables and interleaves the two
    results with ``zip1`` / ``zip2`` (no widening instruction in the look-up)."""
    packed = pack_tmac(random_low_bit_weights(np.random.default_rng(0), 2, (37, 70))[0], 2, 16)
    sch, exe = _build(tmac_func((9, 37), None, 2, packed.padded_groups, 70, 16, 1.0), ARM64)
    assert TMAC_LLVM_SHUFFLE[TMAC_NEON] in sch.mod.script()
    asm = [line.split() for line in exe.mod.inspect_source("asm").splitlines()]
    tbl = [line for line in asm if line[:1] == ["tbl"]]
    assert tbl and all(line[1].endswith(".16b,") for line in tbl)
    for op in ("zip1", "zip2"):
        assert any(line[:1] == [op] and line[1].endswith(".16b,") for line in asm), op


def test_assembly_uses_vpermw():
    packed = pack_tmac(random_low_bit_weights(np.random.default_rng(0), 2, (37, 70))[0], 2, 64, word=True)
    sch, exe = _build(tmac_func((9, 37), None, 2, packed.padded_groups, 70, 64, 1.0, word=True), AVX512)
    assert LLVM_PERMW in sch.mod.script()
    assert any("vpermw" in line and "zmm" in line for line in exe.mod.inspect_source("asm").splitlines())


def test_quantize_loop_is_vectorized():
    """The in-kernel quantization is not scalarized (vector divisions, no gathers)."""
    packed = pack_tmac(random_low_bit_weights(np.random.default_rng(0), 2, (64, 64))[0], 2, 64, word=True)
    _, exe = _build(tmac_func((8, 64), None, 2, packed.padded_groups, 64, 64, 0.3, word=True), AVX512)
    asm = exe.mod.inspect_source("asm")
    assert "vgather" not in asm and "vdivps\t%zmm" in asm


def test_intrinsic_per_target_and_rule_declines():
    assert tmac_intrin_for_target(tvm.target.Target(AVX512)) == TMAC_AVX512
    assert tmac_intrin_for_target(tvm.target.Target(AVX2)) == TMAC_AVX2
    assert tmac_intrin_for_target(tvm.target.Target(NO_SHUFFLE)) is None
    assert tmac_intrin_for_target(tvm.target.Target(AVX512), word=True) == TMAC_PERMW_AVX512
    assert tmac_intrin_for_target(tvm.target.Target(AVX2), word=True) is None
    assert tmac_intrin_for_target(tvm.target.Target(ARM64)) == TMAC_NEON
    assert tmac_intrin_for_target(tvm.target.Target(ARM64), word=True) is None
    assert tmac_form_for_target(tvm.target.Target(ARM64)) == (16, False)
    func = tmac_func((2, 8), None, 2, 2, 8, 32, 1.0)
    assert TmacRule().apply(func, tvm.target.Target(NO_SHUFFLE), False) is None
    assert TmacRule().apply(func, tvm.target.Target(AVX512), False) is None  # packed for ymm
    assert TmacRule().apply(func, tvm.target.Target(ARM64), False) is None  # packed for ymm
    a = te.placeholder((4,), "float32", "a")
    b = te.compute((4,), lambda i: a[i] + 1, name="b")
    assert TmacRule().apply(te.create_prim_func([a, b]), tvm.target.Target(AVX2), False) is None


@pytest.mark.skipif("avx2" not in host_cpu_flags(), reason="no AVX2")
def test_tunable_rows_per_block_is_sampled_and_exact():
    """Under tuning the rows per block are a sampled decision (in the trace); any draw is exact."""
    rng = np.random.default_rng(11)
    wq, _ = random_low_bit_weights(rng, 2, (40, 33))
    packed = pack_tmac(wq, 2, 32)
    func = tmac_func((12, 40), None, 2, packed.padded_groups, 33, 32, 1.0)
    sch = TmacRule().apply(func, tvm.target.Target(AVX2), True)
    assert "sample_categorical" in str(sch.trace)
    exe = tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), tvm.target.Target(AVX2))
    xq = rng.integers(-127, 128, (12, 40)).astype(np.float32)
    out = tvm.runtime.tensor(np.zeros((12, 33), np.float32))
    exe(*(tvm.runtime.tensor(a) for a in (xq, packed.nibbles, np.ones(33, np.float32), np.zeros(33, np.int32))), out)
    np.testing.assert_array_equal(out.numpy(), ref.int_gemm(xq.astype(np.int8), wq))
