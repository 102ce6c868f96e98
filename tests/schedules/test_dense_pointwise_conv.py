"""Convs that Conv2dWeightPacked lowers as matmuls (1x1 convs, grouped too; im2col of small-input stems)
against ONNX Runtime: stride, padding, dilation, padded positions, batch; and the convs it leaves alone."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from test_conv2d_rule import RUNNABLE, _onnx_reference, _relax_conv, _weights

from lut_tvm import _tvm_compat
from lut_tvm.compiler import build_relax, legalize_passes
from schedules.rules.dense_ops import Matmul
from schedules.rules.dense_ops.matmul import NARROW_ACC_VECTORS, pick_tiles

# (batch, C_in, C_out, H, W, kernel, stride, padding, dilation, groups, lowered as a matmul on (16, 8) lanes)
CASES = {
    "56x56_whole_vectors": (1, 16, 48, 56, 56, 1, 1, 0, 1, 1, (True, True)),
    "13x13_padded_f1000": (1, 24, 1000, 13, 13, 1, 1, 0, 1, 1, (True, True)),  # 169 -> 192 / 176 positions
    "stride2_batch2": (2, 20, 36, 14, 14, 1, 2, 0, 1, 1, (False, True)),  # 49 -> 64: too much padding on 16 lanes
    "batch3_odd_channels": (3, 7, 17, 13, 13, 1, 1, 0, 1, 1, (True, True)),
    "groups4_f34_per_group_14x14": (1, 136, 136, 14, 14, 1, 1, 0, 1, 4, (True, True)),
    "groups4_f34_per_group_28x28": (1, 136, 136, 28, 28, 1, 1, 0, 1, 4, (True, True)),  # 7-vector tiles on AVX2
    "groups4_7x7_padded_positions": (1, 96, 96, 7, 7, 1, 1, 0, 1, 4, (False, True)),  # 49 -> 56 on 8 lanes
    "groups3_stride2_batch2": (2, 12, 48, 26, 26, 1, 2, 0, 1, 3, (True, True)),
    "groups8_narrow_stays_conv": (1, 32, 32, 16, 16, 1, 1, 0, 1, 8, (False, False)),
    "stem_3x3_stride2_pad1": (1, 3, 24, 32, 32, 3, 2, 1, 1, 1, (True, True)),
    "stem_3x3_dilation2_batch2_c4": (2, 4, 20, 20, 20, 3, 1, 2, 2, 1, (True, True)),  # 20 x 20 = 400 = 25 x 16
    "stem_2x2_odd_c1": (1, 1, 8, 17, 17, 2, 1, 0, 1, 1, (True, True)),  # 16 x 16 positions
    "stem_odd_positions_stays_conv": (1, 3, 16, 15, 15, 3, 2, 0, 1, 1, (False, False)),  # 7 x 7
    "stem_7x7_stays_conv": (1, 3, 16, 32, 32, 7, 2, 3, 1, 1, (False, False)),
    "c5_3x3_stays_conv": (1, 5, 16, 16, 16, 3, 1, 1, 1, 1, (False, False)),
}


def _matmuls(mod: tvm.IRModule) -> list:
    return [f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc) and "matmul" in gv.name_hint]


@pytest.mark.parametrize("target_spec", RUNNABLE)
@pytest.mark.parametrize("name", list(CASES))
def test_conv_as_matmul_matches_onnx_runtime(name, target_spec):
    batch, c, f, h, w, k, stride, pad, dilation, groups, lowered = CASES[name]
    weight, bias = _weights(c // groups, f, k, seed=len(name))
    x = np.random.default_rng(4).normal(size=(batch, c, h, w)).astype(np.float32)
    padding = (pad,) * 4
    mod = _relax_conv(x.shape, weight, bias, stride, padding, dilation, groups)
    target = tvm.target.Target(target_spec)
    with target:
        legalized = tvm.transform.Sequential(legalize_passes())(mod)
    matmuls = _matmuls(legalized)
    if lowered[0 if target_spec["mcpu"] == "skylake-avx512" else 1]:
        assert len(matmuls) == 1 and Matmul().apply(matmuls[0], target, False) is not None
    else:
        assert not matmuls
    vm = _tvm_compat.virtual_machine(build_relax(mod, target))
    got = vm["main"](_tvm_compat.to_device(x)).numpy()
    want = _onnx_reference(x, weight, bias, stride, padding, dilation, groups)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize("m, n", [(34, 784), (68, 208), (2048, 56), (64, 3136), (1000, 176), (24, 12544), (7, 40)])
def test_matmul_tiles_are_whole_avx2_vectors(m, n):
    """On 8 lanes a column tile is whole vectors (split one register each) within the accumulator cap."""
    mr, nr = pick_tiles(m, n, 8)
    assert m % mr == 0 and n % nr == 0 and nr % 8 == 0
    assert mr * nr // 8 <= NARROW_ACC_VECTORS
