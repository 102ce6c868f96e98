"""Iterative magnitude pruning with weight rewinding (lottery-ticket style) to target sparsities.

The procedure (Frankle & Carbin 2019; rewinding: Frankle et al. 2020):

1. train the dense model, keeping a copy of its whole state after ``rewind_steps`` optimizer
   steps (the "early-training values"; 0 = the initialisation);
2. each round prunes ``rate`` of the weights still alive (smallest magnitude, across all
   prunable layers at once with ``scope="global"``, or the same fraction in every layer with
   ``scope="layer"``), never past the next target sparsity; the schedule passes through every
   target exactly (``pruning_schedule``);
3. rewinds the survivors (and biases, BatchNorm statistics) to the saved state, zeroes the
   pruned weights, and retrains with the mask held: pruned weights are zeroed before every step
   and after training, so they stay exactly 0 (and quantize to 0: the exact LUT drops them).

Prunable layers are ``torch_layers.lut_modules`` (Linear, Conv2d), their weights only.
Training: Adam with a one-cycle learning-rate schedule (per training run), seeded data order,
a tqdm bar, masks re-applied after every optimizer step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..torch_layers import lut_modules

SCOPES = ("global", "layer")


def pruning_schedule(targets, rate: float) -> list[float]:
    """Sparsity after each round: at most ``rate`` of the survivors per round, every target hit."""
    if not 0 < rate < 1:
        raise ValueError(f"pruning rate per round must be in (0, 1), got {rate!r}")
    goals = sorted(float(t) for t in targets)
    if not goals or goals[0] <= 0 or goals[-1] >= 1:
        raise ValueError(f"target sparsities must be in (0, 1), got {list(targets)!r}")
    levels, current = [], 0.0
    for goal in goals:
        while current < goal - 1e-12:
            current = min(goal, 1 - (1 - current) * (1 - rate))
            levels.append(current)
    return levels


def prunable_weights(model: nn.Module, exclude=()) -> dict[str, nn.Parameter]:
    """``{layer name: weight}`` of the Linear / Conv2d layers not in ``exclude``."""
    return {name: module.weight for name, module, _ in lut_modules(model) if name not in set(exclude)}


def full_masks(model: nn.Module, exclude=()) -> dict[str, torch.Tensor]:
    return {name: torch.ones_like(w, dtype=torch.bool) for name, w in prunable_weights(model, exclude).items()}


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero every pruned weight in place."""
    weights = prunable_weights(model)
    with torch.no_grad():
        for name, mask in masks.items():
            weights[name].mul_(mask.to(weights[name].dtype))


def sparsity(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of pruned weights over all masked layers."""
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / max(1, total)


def magnitude_masks(model: nn.Module, masks: dict[str, torch.Tensor], target: float,
                    scope: str = "global") -> dict[str, torch.Tensor]:
    """New masks with the smallest-magnitude surviving weights removed until ``target`` sparsity."""
    if scope not in SCOPES:
        raise ValueError(f"pruning scope must be one of {SCOPES}, got {scope!r}")
    weights = prunable_weights(model)
    if scope == "layer":
        return {name: _prune_to(weights[name].detach().abs(), mask, target) for name, mask in masks.items()}
    scores = torch.cat([weights[n].detach().abs()[m] for n, m in masks.items()])
    total = sum(m.numel() for m in masks.values())
    remove = int(round(target * total)) - (total - scores.numel())
    if remove <= 0:
        return {n: m.clone() for n, m in masks.items()}
    threshold = torch.kthvalue(scores, remove).values
    new = {n: m & (weights[n].detach().abs() > threshold) for n, m in masks.items()}
    # Ties at the threshold: give back the surplus so the count is exact.
    surplus = (total - sum(int(m.sum()) for m in new.values())) - int(round(target * total))
    for name, mask in masks.items():
        if surplus <= 0:
            break
        tied = (mask & (weights[name].detach().abs() == threshold) & ~new[name]).flatten().nonzero()[:surplus]
        new[name].view(-1)[tied.flatten()] = True
        surplus -= len(tied)
    return new


def _prune_to(scores: torch.Tensor, mask: torch.Tensor, target: float) -> torch.Tensor:
    keep = mask.numel() - int(round(target * mask.numel()))
    alive = scores.masked_fill(~mask, -1.0).flatten()
    new = torch.zeros_like(mask).flatten()
    new[torch.topk(alive, max(keep, 0)).indices] = True
    return new.view_as(mask) & mask


@dataclass
class LotteryConfig:
    """Settings of ``lottery_ticket`` (validated on creation)."""

    targets: tuple = (0.5, 0.8, 0.95)
    rate: float = 0.6  # fraction of the surviving weights pruned per round
    scope: str = "global"
    rewind_steps: int = 20
    epochs: int = 10  # of the dense training
    retrain_epochs: int = 5  # per round
    lr: float = 3e-3
    batch_size: int = 64
    seed: int = 0
    exclude: tuple = ()

    def __post_init__(self):
        pruning_schedule(self.targets, self.rate)
        if self.scope not in SCOPES:
            raise ValueError(f"LotteryConfig.scope must be one of {SCOPES}, got {self.scope!r}")
        if self.rewind_steps < 0 or self.epochs < 1 or self.retrain_epochs < 1:
            raise ValueError("LotteryConfig: rewind_steps >= 0, epochs >= 1, retrain_epochs >= 1")


@dataclass
class LotteryResult:
    """The dense model and, per target sparsity, the pruned-and-retrained model and its masks."""

    dense: nn.Module
    pruned: dict = field(default_factory=dict)  # target -> model
    masks: dict = field(default_factory=dict)  # target -> {layer: bool mask}
    history: list = field(default_factory=list)  # one record per round


def _train(model, data, masks, config: LotteryConfig, epochs: int, label: str, augment, rewind=None):
    """Adam with a one-cycle schedule, masks re-applied after every step; returns per-epoch records.

    The data order of epoch ``e`` depends only on ``(seed, e)``. ``rewind`` (a dict) receives the
    whole state after ``config.rewind_steps`` steps.
    """
    x = torch.as_tensor(np.asarray(data[0]), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(data[1]), dtype=torch.long)
    steps_per_epoch = -(-len(x) // config.batch_size)
    if rewind is not None and config.rewind_steps > epochs * steps_per_epoch:
        raise ValueError(f"rewind_steps={config.rewind_steps} is past the end of training "
                         f"({epochs * steps_per_epoch} steps)")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                                   total_steps=epochs * steps_per_epoch)
    apply_masks(model, masks)
    step, history = 0, []
    bar = tqdm(total=epochs * steps_per_epoch, desc=label, unit="step", disable=None)
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
        model.train()
        total = correct = 0.0
        for index in order.split(config.batch_size):
            if rewind is not None and step == config.rewind_steps:
                rewind.update(copy.deepcopy(model.state_dict()))
            logits = model(augment(x[index]) if augment else x[index])
            loss = F.cross_entropy(logits, y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            apply_masks(model, masks)
            step += 1
            total += float(loss.detach()) * len(index)
            correct += int((logits.argmax(-1) == y[index]).sum())
            bar.update(1)
        history.append({"epoch": epoch + 1, "loss": total / len(x), "train_acc": correct / len(x)})
        bar.set_postfix(history[-1])
    bar.close()
    if rewind is not None and not rewind:  # rewind_steps == the last step
        rewind.update(copy.deepcopy(model.state_dict()))
    model.eval()
    return history


def lottery_ticket(model: nn.Module, train_data, config: LotteryConfig | None = None,
                   augment=None, log=None) -> LotteryResult:
    """Train ``model`` (in place: it becomes the dense model) and prune it to ``config.targets``.

    ``train_data = (x, y)`` for cross-entropy classification; ``augment(x)`` (optional) is
    applied to every training batch. Returns the dense model and one model per target.
    """
    config = config or LotteryConfig()
    torch.manual_seed(config.seed)
    masks = full_masks(model, config.exclude)
    rewind: dict = {}
    history = _train(model, train_data, masks, config, config.epochs, "dense", augment, rewind)
    result = LotteryResult(dense=model.eval())
    result.history.append({"sparsity": 0.0, "final": history[-1] if history else {}})
    current = copy.deepcopy(model)
    goals = {round(float(t), 6) for t in config.targets}
    for level in pruning_schedule(config.targets, config.rate):
        masks = magnitude_masks(current, masks, level, config.scope)
        current.load_state_dict(rewind)
        apply_masks(current, masks)
        history = _train(current, train_data, masks, config, config.retrain_epochs,
                         f"prune {level:.0%}", augment)
        reached = sparsity(masks)
        result.history.append({"sparsity": reached, "final": history[-1] if history else {}})
        if log:
            log(f"  pruned to {reached:.1%} (target {level:.1%}), train acc "
                f"{history[-1]['train_acc']:.3f}")
        if round(level, 6) in goals:
            result.pruned[round(level, 6)] = copy.deepcopy(current).eval()
            result.masks[round(level, 6)] = {n: m.clone() for n, m in masks.items()}
    return result


def weight_sparsity(model: nn.Module, exclude=()) -> float:
    """Fraction of exact zeros over the prunable weights of ``model``."""
    weights = list(prunable_weights(model, exclude).values())
    return float(sum(int((w == 0).sum()) for w in weights) / max(1, sum(w.numel() for w in weights)))
