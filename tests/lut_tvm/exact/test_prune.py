"""Lottery-ticket pruning: schedule, exact sparsity, masks held through retraining, zeros survive PTQ."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lut_tvm.exact import reference as ref
from lut_tvm.exact.cost import layer_cost
from lut_tvm.exact.prune import (LotteryConfig, full_masks, lottery_ticket, magnitude_masks,
                                 pruning_schedule, sparsity, weight_sparsity)
from lut_tvm.exact.quantize import evaluate_quantized, quantize_model
from lut_tvm.torch_layers import module_weight as canonical_weight


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    return (x[:1300], data.target[:1300]), (x[1300:], data.target[1300:])


def _accuracy(model, data):
    with torch.no_grad():
        return float((model(torch.from_numpy(data[0])).argmax(-1).numpy() == data[1]).mean())


def test_schedule_hits_every_target_within_rate():
    levels = pruning_schedule([0.8, 0.5, 0.95], rate=0.6)
    assert levels == pytest.approx([0.5, 0.8, 0.92, 0.95])
    for before, after in zip([0.0] + levels, levels):
        assert (after - before) / (1 - before) <= 0.6 + 1e-9
    with pytest.raises(ValueError, match="rate"):
        pruning_schedule([0.5], 1.0)
    with pytest.raises(ValueError, match="target"):
        pruning_schedule([1.0], 0.5)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_masks_exact_count_and_smallest_first(scope):
    torch.manual_seed(0)
    model = MLP()
    masks = magnitude_masks(model, full_masks(model), 0.7, scope)
    assert sparsity(masks) == pytest.approx(0.7, abs=1e-3)
    weights = {"fc1": model.fc1.weight.detach().abs(), "fc2": model.fc2.weight.detach().abs()}
    if scope == "global":
        kept = torch.cat([weights[n][m] for n, m in masks.items()])
        dropped = torch.cat([weights[n][~m] for n, m in masks.items()])
        assert kept.min() >= dropped.max()
    else:
        for name, mask in masks.items():
            assert 1 - mask.float().mean() == pytest.approx(0.7, abs=2 / mask.numel())
    again = magnitude_masks(model, masks, 0.9, scope)
    assert sparsity(again) == pytest.approx(0.9, abs=1e-3)
    assert not any((again[n] & ~masks[n]).any() for n in masks)  # pruned weights stay pruned


def test_lottery_ticket_reaches_sparsities_keeps_zeros_and_learns():
    train, test = _digits()
    torch.manual_seed(0)
    config = LotteryConfig(targets=(0.5, 0.9), rate=0.8, epochs=6, retrain_epochs=5, rewind_steps=5,
                           batch_size=64, lr=1e-2)
    result = lottery_ticket(MLP(), train, config)
    dense_acc = _accuracy(result.dense, test)
    assert dense_acc > 0.85
    assert set(result.pruned) == {0.5, 0.9}
    for target, model in result.pruned.items():
        assert weight_sparsity(model) == pytest.approx(target, abs=1e-3)
        for name, mask in result.masks[target].items():
            weight = model.get_submodule(name).weight.detach()
            assert (weight[~mask] == 0).all() and (weight[mask] != 0).float().mean() > 0.99
        assert _accuracy(model, test) > dense_acc - 0.08
        # Zeros survive quantization, so the exact LUT's lookups fall with sparsity.
        plan = quantize_model(model, train[0][:200], 4)
        layer = plan.layers[0]
        wq = layer.quantized_weight(canonical_weight(model.fc1))
        assert (wq[canonical_weight(model.fc1) == 0] == 0).all()
        dense_wq = ref.quantize_weight(canonical_weight(result.dense.fc1), 4)[0]
        assert layer_cost("fc1", wq, 4, 1).lookups < layer_cost("fc1", dense_wq, 4, 1).lookups
        assert evaluate_quantized(model, plan, test) > 0.7


def test_rewind_past_training_is_an_error():
    train, _ = _digits()
    with pytest.raises(ValueError, match="rewind_steps"):
        lottery_ticket(MLP(), (train[0][:64], train[1][:64]),
                       LotteryConfig(targets=(0.5,), epochs=1, retrain_epochs=1, rewind_steps=10))
