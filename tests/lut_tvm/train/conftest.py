"""Shared fixtures of the training tests: the digits split, a trained digits CNN and its k-means LUT
copy (built once per session; tests deep-copy before training), and an encode-margin helper."""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch

from lut_tvm import reference as ref
from lut_tvm.demo import load_digits_split, train_digits_cnn
from lut_tvm.policy import PlanPolicy
from lut_tvm.train import LutConfig, convert, lut_layers

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


def _distinct_margin(rows: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Per row and codebook: gap from the nearest centroid to the nearest *different* one
    (ties between identical centroids pick the same table row either way)."""
    dist = ref.centroid_distances(rows, centroids)
    best = dist.argmin(-1)
    best_vec = centroids[np.arange(centroids.shape[0])[None, :], best]
    same = (centroids[None] == best_vec[:, :, None, :]).all(-1)
    return np.where(same, np.inf, dist).min(-1) - dist.min(-1)


def sample_margins(lut_model, x: np.ndarray) -> np.ndarray:
    """Smallest encode margin on each sample's path through ``lut_model``'s LUT layers."""
    margins = np.full(len(x), np.inf)

    def hook(layer, args, _out):
        inp = args[0]
        rows = layer.rows(inp)[0] if hasattr(layer, "rows") else inp.reshape(-1, inp.shape[-1])
        per_row = _distinct_margin(rows.numpy(), layer.centroids.detach().numpy()).min(-1)
        margins[:] = np.minimum(margins, per_row.reshape(len(x), -1).min(-1))

    handles = [layer.register_forward_hook(hook) for _, layer in lut_layers(lut_model)]
    try:
        with torch.no_grad():
            lut_model.eval()(torch.from_numpy(x))
    finally:
        for handle in handles:
            handle.remove()
    return margins


@pytest.fixture(name="sample_margins")
def sample_margins_fixture():
    """``sample_margins(lut_model, x)`` (a fixture, as test modules cannot import conftest)."""
    return sample_margins
