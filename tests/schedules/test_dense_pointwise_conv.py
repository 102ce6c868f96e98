"""1x1 convs lowered as matmuls by Conv2dWeightPacked, against ONNX Runtime (stride, padded positions, batch)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from test_conv2d_rule import RUNNABLE, _onnx_reference, _relax_conv, _weights

from lut_tvm import _tvm_compat
from lut_tvm.compiler import build_relax, legalize_passes
from schedules.rules.dense_ops import Matmul

# (batch, C_in, C_out, H, W, stride, groups): positions per image 56 * 56 (whole vector pairs), 13 * 13 = 169
# (padded to 192 / 176 on 16 / 8 lanes), 7 * 7 = 49 after stride 2 (a conv on 16 lanes, 56 on 8)
CASES = {
    "56x56_whole_vectors": (1, 16, 48, 56, 56, 1, 1),
    "13x13_padded_f1000": (1, 24, 1000, 13, 13, 1, 1),
    "stride2_batch2": (2, 20, 36, 14, 14, 2, 1),
    "batch3_odd_channels": (3, 7, 17, 13, 13, 1, 1),
    "groups4_f34_per_group_14x14": (1, 136, 136, 14, 14, 1, 4),
    "groups3_stride2_batch2": (2, 12, 48, 26, 26, 2, 3),
    "groups8_narrow_stays_conv": (1, 32, 32, 16, 16, 1, 8),
}


def _matmuls(mod: tvm.IRModule) -> list:
    return [f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc) and "matmul" in gv.name_hint]


@pytest.mark.parametrize("target_spec", RUNNABLE)
@pytest.mark.parametrize("name", list(CASES))
def test_pointwise_conv_matches_onnx_runtime(name, target_spec):
    batch, c, f, h, w, stride, groups = CASES[name]
    weight, bias = _weights(c // groups, f, 1, seed=len(name))
    x = np.random.default_rng(4).normal(size=(batch, c, h, w)).astype(np.float32)
    mod = _relax_conv(x.shape, weight, bias, stride, (0, 0, 0, 0), 1, groups)
    target = tvm.target.Target(target_spec)
    with target:
        legalized = tvm.transform.Sequential(legalize_passes())(mod)
    matmuls = _matmuls(legalized)
    columns = -(-h // stride) * -(-w // stride)
    lanes = 16 if target_spec["mcpu"] == "skylake-avx512" else 8
    if -(-columns // lanes) * lanes > columns * 1.15 or f // groups < 8:
        assert not matmuls  # rounding up would waste too much: the conv path keeps it
    else:
        assert len(matmuls) == 1 and Matmul().apply(matmuls[0], target, False) is not None
    vm = _tvm_compat.virtual_machine(build_relax(mod, target))
    got = vm["main"](_tvm_compat.to_device(x)).numpy()
    want = _onnx_reference(x, weight, bias, stride, (0, 0, 0, 0), 1, groups)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(np.abs(want).max()))
