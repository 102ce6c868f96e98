"""LUT-NA's exact dense kernel under its default schedule, against the NumPy integer reference."""

import numpy as np
import pytest
import tvm
from tvm import te, tirx

from lut_tvm.exact import reference as ref
from schedules.attrs import LUT_KIND_ATTR
from schedules.exact_lut_compute import (
    EXACT_LUT_DENSE,
    exact_lut_accumulator_func,
    exact_lut_dense_func,
)
from schedules.rules.exact_lut import ExactLutRule
from lut_tvm.testing import loop_kinds as _loop_kinds


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
