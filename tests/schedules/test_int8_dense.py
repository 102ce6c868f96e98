"""The int8 dense kernels (per-row quantization, uint8 x int8 dot products on a packed weight) under
their default schedule, against the NumPy reference ``lut_tvm.int8_reference``: bit for bit, for
every layout (VNNI, AVX-512BW, AVX2, plain loops), 8- and 7-bit activations, M = 1, 7, 128 and odd
D, N. An ISA runs only where this CPU has it; the assembly checks (compile only) name the
instruction each layout must use."""

import numpy as np
import pytest
import tvm

from lut_tvm import int8_reference as ref
from lut_tvm.target_features import host_features
from schedules.int8_dense_compute import int8_dense_func, int8_quantize_rows_func, padded_rows
from schedules.intrin.int8_dot import (
    FALLBACK,
    INT8_DOT4_AVX2,
    INT8_DOT4_AVX512BW,
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
# the same at 7-bit activations: vpmaddubsw where there is no VNNI
TARGETS_7BIT = {
    "vnni": (INT8_DOT_VNNI, "vpdpbusd"),
    "avx512bw": (INT8_DOT4_AVX512BW, "vpmaddubsw"),
    "avx2": (INT8_DOT4_AVX2, "vpmaddubsw"),
}


def _target(name: str, run: bool = True):
    """The target of ``name``; with ``run``, skip where this CPU cannot run its code."""
    if name == "plain":
        return tvm.target.Target({"kind": "llvm", "num-cores": 2})
    mcpu, needs, _, _ = TARGETS[name]
    missing = [f for f in needs if not host_features().has(f)]
    if missing and run:
        pytest.skip(f"this CPU lacks {', '.join(missing)}")
    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2})


def _build(func, target):
    sch = Int8DenseRule().apply(func, target, False)
    assert sch is not None, "the rule must accept its own kernel"
    return tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), target)


def _tensor(array):
    return tvm.runtime.tensor(np.ascontiguousarray(array))


def _run(target, x, weight, act_bits=8):
    """``(xq, xs, zp, y)`` of the compiled kernels, rows and depth cut back to ``x``'s."""
    layout = int8_layout_for_target(target, act_bits)
    rows, depth = x.shape
    wq, ws = ref.quantize_weight(weight)
    packed = ref.pack_weight(wq, layout.lanes, layout.group)
    padded_depth = packed.shape[1] * packed.shape[3]
    mp = padded_rows(rows)
    quant = _build(int8_quantize_rows_func(rows, depth, padded_depth, act_bits), target)
    xq, xs, zp = (_tensor(np.zeros((mp, padded_depth), np.uint8)), _tensor(np.zeros(mp, np.float32)),
                  _tensor(np.zeros(mp, np.float32)))
    quant(_tensor(x), xq, xs, zp)
    dense = _build(int8_dense_func(rows, packed.shape, weight.shape[1], act_bits), target)
    y = _tensor(np.zeros((rows, weight.shape[1]), np.float32))
    dense(xq, _tensor(packed), _tensor(ref.column_sums(wq)), xs, zp, _tensor(ws), y)
    return xq.numpy()[:rows, :depth], xs.numpy()[:rows], zp.numpy()[:rows], y.numpy()


SHAPES = [(1, 50, 17), (7, 37, 29), (128, 96, 40), (5, 64, 16)]


@pytest.mark.parametrize("act_bits", [8, 7])
@pytest.mark.parametrize("name", ["vnni", "avx512bw", "avx2", "plain"])
@pytest.mark.parametrize("rows,depth,cols", SHAPES)
def test_kernels_bit_exact(name, rows, depth, cols, act_bits):
    target = _target(name)
    rng = np.random.default_rng(rows * 1000 + depth + cols)
    x = (rng.standard_normal((rows, depth)) * rng.uniform(0.1, 4.0, (rows, 1))).astype(np.float32)
    x[0] = np.abs(x[0])  # a row without negatives: zero point 0
    weight = rng.standard_normal((depth, cols)).astype(np.float32)
    weight[:, 0] = 0.0  # a zero column: scale 1
    xq, xs, zp, y = _run(target, x, weight, act_bits)
    ref_xq, ref_xs, ref_zp = ref.quantize_rows(x, act_bits)
    assert ref_xq.max() == ref.act_qmax(act_bits)
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


@pytest.mark.parametrize("name", ["vnni", "avx512bw", "avx2"])
def test_7bit_worst_case_pairs_do_not_saturate(name):
    """7-bit activations all 127 against weights all 127 or all -127 (every ``vpmaddubsw`` pair sum
    +-32258, the largest there is), odd D: bit exact, and the exact integer sum reached."""
    target = _target(name)
    depth, cols = 75, 19
    x = np.full((7, depth), 3.0, np.float32)  # no negatives: zero point 0, every entry quantizes to 127
    x[1, 5] = 0.0  # one row with a 0: still zero point 0
    weight = np.where(np.arange(cols) % 2 == 0, 0.5, -0.5).astype(np.float32) * np.ones((depth, 1), np.float32)
    xq, _, zp, y = _run(target, x, weight, act_bits=7)
    assert (xq[0] == 127).all() and not zp.any()
    np.testing.assert_array_equal(y, ref.int8_dense(x, weight, act_bits=7))
    wq, _ = ref.quantize_weight(weight)
    assert abs(ref.accumulate(xq, wq)[0]).min() == 127 * 127 * depth  # no pair saturated


def test_7bit_reference_range_and_error():
    """7-bit rows span 0..127 with 0 exact, and stay a close quantization (error about twice 8 bits')."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 120)).astype(np.float32)
    weight = rng.standard_normal((120, 30)).astype(np.float32)
    xq, xs, zp = ref.quantize_rows(x, 7)
    assert xq.max() <= 127 and (xq.max(axis=1) == 127).any()
    assert (np.abs((xq.astype(np.float32) - zp[:, None]) * xs[:, None] - x) <= xs[:, None] * 0.5001).all()
    exact = x @ weight
    errors = [np.linalg.norm(ref.int8_dense(x, weight, act_bits=b) - exact) for b in (8, 7)]
    assert errors[0] < errors[1] < 4 * errors[0]
    with pytest.raises(ValueError, match="act_bits"):
        ref.int8_dense(x, weight, act_bits=6)


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


@pytest.mark.parametrize("name", ["vnni", "avx512bw", "avx2"])
def test_7bit_assembly_uses_vpmaddubsw_without_vnni(name):
    """Compile only: 7-bit activations get ``vpmaddubsw`` (no widening ``vpmaddwd`` pairs of int16
    weights) where the target has no VNNI, and still ``vpdpbusd`` where it has."""
    target = _target(name, run=False)
    intrin, instruction = TARGETS_7BIT[name]
    layout = int8_layout_for_target(target, 7)
    assert layout.intrin == intrin and layout.group == 4
    func = int8_dense_func(8, (2, 8, layout.lanes, layout.group), 2 * layout.lanes, act_bits=7)
    asm = _build(func, target).mod.inspect_source("asm")
    assert instruction in asm
    assert "vpmovsxbw" not in asm  # the weights are not widened
    eight_bit = _build(int8_dense_func(8, (2, 8, layout.lanes, layout.group), 2 * layout.lanes), target)
    assert "vpmaddubsw" not in eight_bit.mod.inspect_source("asm")  # the same packing at 8 bits never


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
