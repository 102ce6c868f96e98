"""Fine-tuning a chosen plan keeps every chosen layer a LUT, Conv1d layers included."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lut_tvm.optimizer.finetune import finetune_plan


def conv1d_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv1d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 24, 4)).eval()


def test_finetune_keeps_the_chosen_conv1d_and_linear_layers():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 1, 24)).astype(np.float32)
    y = rng.integers(0, 4, 96)
    model = conv1d_net()
    tuned, plan = finetune_plan(model, {"2": 4, "5": 16}, x[:64], (x, y), epochs=1)
    assert {layer.name: layer.sub_vector_len for layer in plan.layers} == {"2": 4, "5": 16}
    with torch.no_grad():  # the dense model the plan binds to has the fine-tuned weights, same shapes
        assert tuned(torch.from_numpy(x[:2])).shape == (2, 4)
