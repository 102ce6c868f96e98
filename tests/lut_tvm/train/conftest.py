"""Shared fixtures of the training tests: the digits split, a trained digits CNN and its k-means LUT
copy (built once per session; tests deep-copy before training), and the LUT model's forward given
compiled codes."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from lut_tvm.demo import load_digits_split, train_digits_cnn
from lut_tvm.policy import PlanPolicy
from lut_tvm.testing import forward_given_codes
from lut_tvm.train import LutConfig, convert

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


@pytest.fixture(name="forward_given_codes")
def forward_given_codes_fixture():
    """``lut_tvm.testing.forward_given_codes(lut_model, x, codes)``."""
    return forward_given_codes
