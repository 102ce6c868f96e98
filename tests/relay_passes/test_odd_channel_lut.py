"""LUT layers whose output channels are not a multiple of 16 (N = 10, 24, 40, 100) take the row
encode + byte-shuffle lookup on AVX2 and AVX-512 targets, and equal the NumPy reference run with
the compiled model's codes (``lut_tvm.testing.compile_with_codes`` / ``GivenCodes``)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from lut_tvm import reference as ref
from lut_tvm.plan import LayerPlan, Plan
from lut_tvm.targets import host_cpu_flags
from lut_tvm.testing import GivenCodes, compile_with_codes
from lut_tvm.weights import LayerKind, fingerprint

FLAGS = frozenset(host_cpu_flags())
TARGETS = [
    pytest.param("x86-avx512", id="avx512",
                 marks=pytest.mark.skipif(not {"avx512f", "avx512bw"} <= FLAGS, reason="no AVX-512BW")),
    pytest.param("x86-avx2", id="avx2", marks=pytest.mark.skipif("avx2" not in FLAGS, reason="no AVX2")),
]
ODD_CHANNELS = [10, 24, 40, 100]
K = 16
TOL = dict(rtol=1e-5, atol=1e-5)


def sampled_centroids(rows: np.ndarray, sub_len: int, seed: int) -> np.ndarray:
    """``[C, K, V]`` centroids: K distinct rows' sub-vectors, slightly perturbed (data-like scale)."""
    rng = np.random.default_rng(seed)
    picked = rows[rng.choice(len(rows), K, replace=False)]
    cents = picked.reshape(K, -1, sub_len).transpose(1, 0, 2)
    return (cents + 0.1 * rng.standard_normal(cents.shape)).astype(np.float32)


def kernel_names(tapped) -> set[str]:
    """The LUT kernel functions the built module calls (without the numbers that make repeated
    names unique)."""
    found = re.findall(r"lut_(?:encode|lookup)_\w+", tapped.compiled.executable.as_text())
    return {re.sub(r"\d+$", "", name) for name in found}


def relu(a):
    return np.maximum(a, 0)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("out_features", ODD_CHANNELS)
def test_dense_odd_n_on_shuffle(target, out_features):
    """Linear(48, N) + ReLU, then Linear(N, 10): both planned (N, then 10 outputs), 64 rows."""
    rng = np.random.default_rng(out_features)
    torch.manual_seed(out_features)
    model = torch.nn.Sequential(torch.nn.Linear(48, out_features), torch.nn.ReLU(),
                                torch.nn.Linear(out_features, 10)).eval()
    w1, b1 = (t.detach().numpy() for t in (model[0].weight, model[0].bias))
    w2, b2 = (t.detach().numpy() for t in (model[2].weight, model[2].bias))
    x = rng.standard_normal((64, 48)).astype(np.float32)
    c1 = sampled_centroids(x, 4, 1)
    c2 = sampled_centroids(relu(x @ w1.T + b1), 2, 2)
    plan = Plan([LayerPlan(name, LayerKind.DENSE, w.T.shape, fingerprint(np.ascontiguousarray(w.T)), c)
                 for name, w, c in (("fc1", w1, c1), ("fc2", w2, c2))])
    tapped = compile_with_codes(model, plan, target, example_inputs=(x,))
    names = kernel_names(tapped)
    shuffle = {"lut_encode_dense_rows", "lut_lookup_dense_shuffle_relu", "lut_lookup_dense_shuffle"}
    assert shuffle <= names, names
    assert not {"lut_encode_dense", "lut_lookup_dense"} & names, names

    got, codes = tapped(x)
    given = GivenCodes(codes)
    hidden = relu(given.lut_matmul(x, c1, w1.T, b1, where="fc1"))
    want = given.lut_matmul(hidden, c2, w2.T, b2, where="fc2")
    given.assert_all_used()
    assert got.shape == want.shape == (64, 10)
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("out_channels", ODD_CHANNELS)
def test_conv_odd_n_on_shuffle(target, out_channels):
    """Conv2d(4, O, 3, padding=1) + ReLU, then a 1x1 Conv2d(O, 10): both planned, 2 x 6x7 images."""
    rng = np.random.default_rng(out_channels)
    torch.manual_seed(out_channels)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, out_channels, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(out_channels, 10, 1)).eval()
    w1, b1 = (t.detach().numpy() for t in (model[0].weight, model[0].bias))
    w2, b2 = (t.detach().numpy() for t in (model[2].weight, model[2].bias))
    x = rng.standard_normal((2, 4, 6, 7)).astype(np.float32)
    rows1, _ = ref.im2col_nchw(x, (3, 3), padding=(1, 1, 1, 1))
    c1 = sampled_centroids(rows1, 9, 1)
    c2 = sampled_centroids(relu(rows1 @ w1.reshape(out_channels, -1).T + b1), 2, 2)
    plan = Plan([LayerPlan(name, LayerKind.CONV2D, w.shape, fingerprint(w), c)
                 for name, w, c in (("conv1", w1, c1), ("conv2", w2, c2))])
    tapped = compile_with_codes(model, plan, target, example_inputs=(x,))
    names = kernel_names(tapped)
    shuffle = {"lut_encode_conv2d_rows", "lut_lookup_conv2d_shuffle_relu", "lut_lookup_conv2d_shuffle"}
    assert shuffle <= names, names
    assert not {"lut_encode_conv2d", "lut_lookup_conv2d"} & names, names

    got, codes = tapped(x)
    given = GivenCodes(codes)
    hidden = relu(given.lut_conv2d(x, c1, w1, b1, padding=(1, 1, 1, 1), where="conv1"))
    want = given.lut_conv2d(hidden, c2, w2, b2, where="conv2")
    given.assert_all_used()
    assert got.shape == want.shape == (2, 10, 6, 7)
    np.testing.assert_allclose(got, want, **TOL)
