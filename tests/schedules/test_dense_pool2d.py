"""The Pool2d rule (max / average pools, padding materialized once, strided ones de-interleaved by column)
against torch on odd shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from tvm import relax

from lut_tvm import _tvm_compat
from lut_tvm.compiler import build_relax, legalize_passes
from lut_tvm.targets import host_cpu_flags
from lut_tvm.testing import relax_module
from schedules.rules.dense_ops import Pool2d

TARGET = ({"kind": "llvm", "mcpu": "skylake-avx512"} if "avx512f" in host_cpu_flags()
          else {"kind": "llvm", "mcpu": "haswell"} if "avx2" in host_cpu_flags() else {"kind": "llvm"})

# (kind, batch, channels, H, W, kernel, stride, padding, count_include_pad)
CASES = {
    "avg3_pad1_exclude": ("avg", 1, 7, 13, 11, 3, 1, 1, False),
    "avg3_pad1_include_batch2": ("avg", 2, 5, 9, 17, 3, 1, 1, True),
    "max3_pad1": ("max", 1, 6, 14, 14, 3, 1, 1, False),
    "max2_no_pad_wide": ("max", 1, 3, 5, 70, 2, 1, 0, False),  # 69 columns: 3 vectors of 23
    "avg7_global_like": ("avg", 1, 9, 7, 7, 7, 1, 0, True),
    "max3_stride2_odd_padded_width": ("max", 1, 4, 15, 15, 3, 2, 1, False),  # 17 padded columns: 2 x 9
    "max3_stride2_no_pad_odd": ("max", 1, 5, 13, 21, 3, 2, 0, False),  # the input copied de-interleaved
    "avg3_stride2_exclude_even": ("avg", 2, 3, 10, 18, 3, 2, 1, False),
    "avg2_stride3_include": ("avg", 1, 6, 11, 23, 2, 3, 1, True),
}


def _torch_pool(x, kind, k, stride, pad, include):
    t = torch.from_numpy(x)
    if kind == "max":
        return F.max_pool2d(t, k, stride, pad).numpy()
    return F.avg_pool2d(t, k, stride, pad, count_include_pad=include).numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_pool_matches_torch(name):
    kind, n, c, h, w, k, stride, pad, include = CASES[name]
    op = relax.op.nn.max_pool2d if kind == "max" else relax.op.nn.avg_pool2d
    extra = {} if kind == "max" else {"count_include_pad": include}
    mod = relax_module((n, c, h, w), lambda bb, x: op(x, pool_size=k, strides=stride, padding=pad, **extra))
    target = tvm.target.Target(TARGET)
    with target:
        legalized = tvm.transform.Sequential(legalize_passes())(mod)
    funcs = [f for _, f in legalized.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(funcs) == 1
    assert Pool2d().apply(funcs[0], target, False) is not None
    x = np.random.default_rng(len(name)).normal(size=(n, c, h, w)).astype(np.float32)
    got = _tvm_compat.virtual_machine(build_relax(mod, target))["main"](_tvm_compat.to_device(x)).numpy()
    np.testing.assert_allclose(got, _torch_pool(x, kind, k, stride, pad, include), rtol=1e-5, atol=1e-6)
