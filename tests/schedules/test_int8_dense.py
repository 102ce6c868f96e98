"""The int8 dense kernels (per-row quantization, uint8 x int8 dot products on a packed weight) under
their default schedule, against the NumPy reference ``lut_tvm.int8_reference``: bit for bit, for
every layout (VNNI, AVX-512BW, AVX2, plain loops), M = 1, 7, 128 and odd D, N. An ISA runs only
where this CPU has it; the assembly checks name the instruction each layout must use."""

import numpy as np
import pytest
import tvm

from lut_tvm import int8_reference as ref
from lut_tvm.target_features import host_features
from schedules.int8_dense_compute import int8_dense_func, int8_quantize_rows_func, padded_rows
from schedules.intrin.int8_dot import (
    FALLBACK,
    INT8_DOT_AVX2,
    INT8_DOT_AVX512,
    INT8_DOT_VNNI,
    int8_layout_for_target,
)
from schedules.rules.int8_dense import Int8DenseRule

# (mcpu, the x86 features the CPU needs, intrinsic, instruction in the assembly)
TARGETS = {
    "vnni": ("cascadelake", ("avx512bw", "avx512vnni"), INT8_DOT_VNNI, "vpdpbusd"),
    "avx512bw": ("skylake-avx512", ("avx512bw",), INT8_DOT_AVX512, "vpmaddwd"),
    "avx2": ("haswell", ("avx2",), INT8_DOT_AVX2, "vpmaddwd"),
}


def _target(name: str):
    if name == "plain":
        return tvm.target.Target({"kind": "llvm", "num-cores": 2})
    mcpu, needs, _, _ = TARGETS[name]
    missing = [f for f in needs if not host_features().has(f)]
    if missing:
        pytest.skip(f"this CPU lacks {', '.join(missing)}")
    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2})


def _build(func, target):
    sch = Int8DenseRule().apply(func, target, False)
    assert sch is not None, "the rule must accept its own kernel"
    return tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), target)


def _tensor(array):
    return tvm.runtime.tensor(np.ascontiguousarray(array))


def _run(target, x, weight):
    """``(xq, xs, zp, y)`` of the compiled kernels, rows and depth cut back to ``x``'s."""
    layout = int8_layout_for_target(target)
    rows, depth = x.shape
    wq, ws = ref.quantize_weight(weight)
    packed = ref.pack_weight(wq, layout.lanes, layout.group)
    padded_depth = packed.shape[1] * packed.shape[3]
    mp = padded_rows(rows)
    quant = _build(int8_quantize_rows_func(rows, depth, padded_depth), target)
    xq, xs, zp = (_tensor(np.zeros((mp, padded_depth), np.uint8)), _tensor(np.zeros(mp, np.float32)),
                  _tensor(np.zeros(mp, np.float32)))
    quant(_tensor(x), xq, xs, zp)
    dense = _build(int8_dense_func(rows, packed.shape, weight.shape[1]), target)
    y = _tensor(np.zeros((rows, weight.shape[1]), np.float32))
    dense(xq, _tensor(packed), _tensor(ref.column_sums(wq)), xs, zp, _tensor(ws), y)
    return xq.numpy()[:rows, :depth], xs.numpy()[:rows], zp.numpy()[:rows], y.numpy()


SHAPES = [(1, 50, 17), (7, 37, 29), (128, 96, 40), (5, 64, 16)]


@pytest.mark.parametrize("name", ["vnni", "avx512bw", "avx2", "plain"])
@pytest.mark.parametrize("rows,depth,cols", SHAPES)
def test_kernels_bit_exact(name, rows, depth, cols):
    target = _target(name)
    rng = np.random.default_rng(rows * 1000 + depth + cols)
    x = (rng.standard_normal((rows, depth)) * rng.uniform(0.1, 4.0, (rows, 1))).astype(np.float32)
    x[0] = np.abs(x[0])  # a row without negatives: zero point 0
    weight = rng.standard_normal((depth, cols)).astype(np.float32)
    weight[:, 0] = 0.0  # a zero column: scale 1
    xq, xs, zp, y = _run(target, x, weight)
    ref_xq, ref_xs, ref_zp = ref.quantize_rows(x)
    np.testing.assert_array_equal(xq, ref_xq)
    np.testing.assert_array_equal(xs, ref_xs)
    np.testing.assert_array_equal(zp.astype(np.int32), ref_zp)
    wq, ws = ref.quantize_weight(weight)
    acc = ref.accumulate(ref_xq, wq)
    np.testing.assert_array_equal(y, ref.dequantize(acc, ref_xs, ref_zp, ref.column_sums(wq), ws))


def test_extreme_values_do_not_saturate():
    """All activations 255 against weights +-127: the pair sums that ``vpmaddubsw`` would saturate."""
    target = _target("avx2")
    depth, cols = 64, 24
    x = np.full((3, depth), 10.0, np.float32)
    x[:, 0] = -10.0  # zero point 128, every other entry quantizes to 255
    weight = np.where(np.arange(cols) % 2 == 0, 1.0, -1.0).astype(np.float32) * np.ones((depth, 1), np.float32)
    _, _, _, y = _run(target, x, weight)
    np.testing.assert_array_equal(y, ref.int8_dense(x, weight))


def test_reference_against_float():
    """The reference is a quantization of ``x @ W``: close (relative error < 2%) and 0 exact."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 200)).astype(np.float32)
    weight = rng.standard_normal((200, 50)).astype(np.float32)
    exact = x @ weight
    approx = ref.int8_dense(x, weight)
    assert np.linalg.norm(approx - exact) / np.linalg.norm(exact) < 0.02
    xq, xs, zp = ref.quantize_rows(x)
    assert (np.abs((xq.astype(np.float32) - zp[:, None]) * xs[:, None] - x) <= xs[:, None] * 0.5001).all()
    zero = np.zeros((2, 200), np.float32)
    np.testing.assert_array_equal(ref.int8_dense(zero, weight), np.zeros((2, 50), np.float32))


def test_pack_weight_layout():
    rng = np.random.default_rng(4)
    wq = rng.integers(-127, 128, (9, 21)).astype(np.int8)
    packed = ref.pack_weight(wq, 8, 4)
    assert packed.shape == (3, 3, 8, 4)
    for d in range(9):
        for n in range(21):
            assert packed[n // 8, d // 4, n % 8, d % 4] == wq[d, n]
    assert not packed[:, 2, :, 1:].any() and not packed[2, :, 5:, :].any()  # padding is zero


@pytest.mark.parametrize("name", ["vnni", "avx512bw", "avx2"])
def test_assembly_uses_the_dot_instruction(name):
    target = _target(name)
    _, _, intrin, instruction = TARGETS[name]
    layout = int8_layout_for_target(target)
    assert layout.intrin == intrin
    func = int8_dense_func(8, (2, 8 // layout.group * 4, layout.lanes, layout.group), 2 * layout.lanes)
    asm = _build(func, target).mod.inspect_source("asm")
    assert instruction in asm
    assert "vpmaddubsw" not in asm


def test_arm_builds_with_plain_loops():
    """Compile-only (no ARM here): the plain layout's loops lower and build for AArch64 NEON."""
    target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    layout = int8_layout_for_target(target)
    assert layout.intrin is None
    for func in (int8_quantize_rows_func(7, 37, 40), int8_dense_func(7, (2, 10, layout.lanes, layout.group), 13)):
        sch = Int8DenseRule().apply(func, target, False)
        assert "main" in tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), target).mod.inspect_source("asm")


def test_plain_layout_without_simd_features():
    assert int8_layout_for_target(tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu"})) == FALLBACK
    assert int8_layout_for_target(_target("plain")) == FALLBACK  # baseline x86-64: no AVX2


def test_rule_ignores_other_functions():
    func = tvm.te.create_prim_func([tvm.te.placeholder((4,), "float32")])
    assert Int8DenseRule().apply(func, tvm.target.Target("llvm"), False) is None
