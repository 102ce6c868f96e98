"""Shared fixtures of the optimize tests: scikit-learn's digits and two small models wide enough that
some LUT layers pay (an MLP and a CNN), trained for a few seconds (seeded, one torch thread)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lut_tvm.demo import load_digits_split

SEED = 0
# Few timing runs and two V values keep a whole optimize under ~20 s on a busy 2-core machine.


def pytest_collection_modifyitems(items):
    for item in items:  # k-means on a codebook with fewer distinct sub-vectors than K: benign
        item.add_marker(pytest.mark.filterwarnings(
            "ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning"))


class WideMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class WideCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int) -> nn.Module:
    """Adam on cross-entropy, seeded, one torch thread; returns the model in eval mode."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(SEED)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        xs, ys = torch.from_numpy(x), torch.from_numpy(y)
        gen = torch.Generator().manual_seed(SEED)
        for _ in range(epochs):
            order = torch.randperm(len(xs), generator=gen)
            for start in range(0, len(xs), 64):
                idx = order[start : start + 64]
                opt.zero_grad()
                nn.functional.cross_entropy(model(xs[idx]), ys[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(before)
    return model.eval()


@pytest.fixture(scope="session")
def digits():
    """``(x_train, x_test, y_train, y_test)``, NCHW float32."""
    return load_digits_split(SEED)


@pytest.fixture(scope="session")
def mlp_case(digits):
    """``(model, calibration, eval x, eval y)`` of the digits MLP (inputs flattened to 64)."""
    x_train, x_test, y_train, y_test = digits
    torch.manual_seed(SEED)
    flat_train, flat_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    return train(WideMLP(), flat_train, y_train, 20), flat_train, flat_test, y_test


@pytest.fixture(scope="session")
def cnn_case(digits):
    """``(model, calibration, eval x, eval y)`` of the digits CNN."""
    x_train, x_test, y_train, y_test = digits
    torch.manual_seed(SEED)
    return train(WideCNN(), x_train, y_train, 12), x_train, x_test, y_test
