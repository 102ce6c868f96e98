"""Shared fixtures of the training tests: the digits split, a trained digits CNN and its k-means LUT
copy (built once per session; tests deep-copy before training), and the LUT model's forward given
compiled codes."""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch

from lut_tvm.demo import load_digits_split, train_digits_cnn
from lut_tvm.policy import PlanPolicy
from lut_tvm.plan import TableQuant
from lut_tvm.testing import GivenCodes
from lut_tvm.train import LutConfig, convert, lut_layers
from lut_tvm.train.layers import LutConv2d

SEED = 0
CNN_EPOCHS = 8
CONFIG = LutConfig(policy=PlanPolicy(max_rows=2048, seed=SEED))


@contextlib.contextmanager
def torch_threads(count: int):
    """Run with ``count`` torch threads: these models are tiny, and on a busy 2-core machine two
    spinning intra-op threads make each step 10x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with torch_threads(1):
        yield


def pytest_collection_modifyitems(items):
    # k-means on a codebook whose sub-vectors are all equal (a dead ReLU channel): benign
    for item in items:
        item.add_marker(pytest.mark.filterwarnings(
            "ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning"))


@pytest.fixture(scope="session")
def digits():
    """``(x_train, x_test, y_train, y_test)`` of scikit-learn's digits, NCHW float32."""
    return load_digits_split(SEED)


@pytest.fixture(scope="session")
def digits_cnn(digits):
    x_train, _, y_train, _ = digits
    with torch_threads(1):
        return train_digits_cnn(x_train, y_train, seed=SEED, epochs=CNN_EPOCHS)


@pytest.fixture(scope="session")
def kmeans_cnn(digits, digits_cnn):
    """The digits CNN converted with k-means centroids (do not train it in place: deep-copy)."""
    with torch_threads(1):
        return convert(digits_cnn, CONFIG, digits[0])


@pytest.fixture
def fresh_kmeans_cnn(kmeans_cnn):
    return copy.deepcopy(kmeans_cnn)


def forward_given_codes(lut_model, x: np.ndarray, codes: list[np.ndarray]) -> np.ndarray:
    """``lut_model``'s forward with each LUT layer replaced by the NumPy reference run with the
    compiled model's ``codes`` (``lut_tvm.testing.GivenCodes``: each code is checked against the
    nearest centroid of the layer's actual input, near-ties aside)."""
    given = GivenCodes(codes)

    def hook(layer, args, _out):
        inp = args[0].detach().numpy()
        cents = layer.centroids.detach().numpy()
        weight = layer.weight.detach().numpy()
        bias = None if layer.bias is None else layer.bias.detach().numpy()
        tables = None if layer.tables is None else layer.tables.detach().numpy()
        granularity = TableQuant(layer.table_quant).granularity
        if isinstance(layer, LutConv2d):
            (ph, pw), where = layer.padding, f"LUT conv {layer.extra_repr()}"
            out = given.lut_conv2d(inp, cents, weight, bias, layer.stride, (ph, pw, ph, pw), tables, where,
                                   granularity)
        else:
            rows = inp.reshape(-1, inp.shape[-1])
            out = given.lut_matmul(rows, cents, weight.T, bias, tables, f"LUT linear {layer.extra_repr()}",
                                   granularity)
            out = out.reshape(*inp.shape[:-1], -1)
        return torch.from_numpy(out)

    handles = [layer.register_forward_hook(hook) for _, layer in lut_layers(lut_model)]
    try:
        with torch.no_grad():
            y = lut_model.eval()(torch.from_numpy(x)).numpy()
    finally:
        for handle in handles:
            handle.remove()
    given.assert_all_used()
    return y


@pytest.fixture(name="forward_given_codes")
def forward_given_codes_fixture():
    """``forward_given_codes(lut_model, x, codes)`` (a fixture, as test modules cannot import conftest)."""
    return forward_given_codes
