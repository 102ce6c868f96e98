"""What the bad-input tests share: a two-Linear torch model (``tiny``), its input ``X``, its
k-means plan, and checking that a call raises a given LutTvmError subclass (``raises``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import lut_tvm
from lut_tvm import LutTvmError


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(32, 16)
        self.fc2 = nn.Linear(16, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def tiny(seed):
    torch.manual_seed(seed)
    return Tiny().eval()


X = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)


def kmeans_plan(model):
    """The default k-means plan of ``tiny``'s model on 64 seeded samples: fc1 only."""
    calibration = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)
    plan = lut_tvm.build_kmeans_plan(model, calibration)
    assert [layer.name for layer in plan.layers] == ["fc1"]
    return plan


def raises(exc_type, func, *args, **kwargs) -> str:
    """Run ``func``, check it raises ``exc_type`` (a LutTvmError); return the message."""
    assert issubclass(exc_type, LutTvmError)
    with pytest.raises(exc_type) as info:
        func(*args, **kwargs)
    return str(info.value)
