"""The DepthwiseConv2d rule (depthwise conv2d, fused bias + relu; strided ones de-interleaved by column)
against ONNX Runtime on odd shapes."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from test_conv2d_rule import RUNNABLE, _onnx_reference, _relax_conv, _weights

from lut_tvm import _tvm_compat
from lut_tvm.compiler import build_relax, legalize_passes
from schedules.rules.dense_ops import DepthwiseConv2d

# (batch, channels, H, W, kernel, stride, padding, dilation): the rule takes undilated ones
CASES = {
    "3x3_pad1_odd": (1, 7, 13, 11, 3, 1, 1, 1),
    "5x5_pad2_batch2": (2, 12, 9, 17, 5, 1, 2, 1),
    "3x3_no_pad_wide": (1, 5, 6, 70, 3, 1, 0, 1),  # 68 columns: 4 vectors of 17
    "3x3_stride2_odd_padded_width": (1, 8, 15, 15, 3, 2, 1, 1),  # 17 padded columns: 2 x 9
    "3x3_stride2_even_wide": (1, 5, 9, 78, 3, 2, 1, 1),  # 39 output columns
    "5x5_stride2_no_pad_batch2": (2, 6, 12, 19, 5, 2, 0, 1),  # the input copied de-interleaved
    "3x3_stride3_pad1": (1, 4, 10, 14, 3, 3, 1, 1),
    "3x3_dilation2_declined": (1, 6, 12, 12, 3, 1, 2, 2),
}


@pytest.mark.parametrize("target_spec", RUNNABLE)
@pytest.mark.parametrize("name", list(CASES))
def test_depthwise_conv_matches_onnx_runtime(name, target_spec):
    n, c, h, w, k, stride, pad, dilation = CASES[name]
    weight, bias = _weights(1, c, k, seed=len(name))
    x = np.random.default_rng(5).normal(size=(n, c, h, w)).astype(np.float32)
    padding = (pad,) * 4
    mod = _relax_conv(x.shape, weight, bias, stride, padding, dilation, c)
    target = tvm.target.Target(target_spec)
    with target:
        legalized = tvm.transform.Sequential(legalize_passes())(mod)
    funcs = [f for gv, f in legalized.functions_items() if "conv2d" in gv.name_hint]
    assert len(funcs) == 1
    assert (DepthwiseConv2d().apply(funcs[0], target, False) is not None) == (dilation == 1)
    got = _tvm_compat.virtual_machine(build_relax(mod, target))["main"](_tvm_compat.to_device(x)).numpy()
    want = _onnx_reference(x, weight, bias, stride, padding, dilation, c)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize("mcpu", ["skylake-avx512", "icelake-server"])
def test_strided_windows_and_matmul_build_for_avx512(mcpu):
    """Strided depthwise convs and pools, and a 1x1 conv as a matmul with 64-column (4 x 16 lanes) tiles, are
    taken and build for AVX-512 targets (not run on a CPU without it)."""
    from tvm import relax  # pylint: disable=import-outside-toplevel

    from lut_tvm.testing import relax_module  # pylint: disable=import-outside-toplevel
    from schedules.rules.dense_ops import Matmul, Pool2d  # pylint: disable=import-outside-toplevel

    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    weight, bias = _weights(1, 24, 3, seed=3)
    conv = _relax_conv((1, 24, 29, 58), weight, bias, 2, (1, 1, 1, 1), 1, 24)
    pool = relax_module((1, 24, 29, 57), lambda bb, x: relax.op.nn.max_pool2d(x, pool_size=3, strides=2, padding=1))
    pointwise = _relax_conv((1, 16, 56, 56), *_weights(16, 48, 1, seed=4), 1, (0, 0, 0, 0), 1, 1)
    cases = ((conv, DepthwiseConv2d(), "conv2d"), (pool, Pool2d(), "pool"), (pointwise, Matmul(), "matmul"))
    for mod, rule, key in cases:
        with target:
            legalized = tvm.transform.Sequential(legalize_passes())(mod)
        funcs = [f for gv, f in legalized.functions_items() if key in gv.name_hint]
        assert len(funcs) == 1 and rule.apply(funcs[0], target, False) is not None
        assert build_relax(mod, target) is not None
