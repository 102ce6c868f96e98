"""Centroid-learning recipes: LUT-NN's (cross-entropy + distillation) and a low-data per-layer reconstruction.

Both train a LUT model (from ``convert``) against its original (the teacher) with Adam, seeded;
the data order of epoch ``e`` depends only on ``(seed, e)``, so a run resumed from its
checkpoint (written atomically after every epoch) ends where an uninterrupted one does. A tqdm
bar shows the loss and the running training accuracy (and the test accuracy per epoch when
``eval_data`` is given). ``kmeans_baseline`` is the MADDNESS-style baseline: k-means centroids,
no backpropagation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..errors import LutTvmError
from ..files import atomic_path
from .convert import LutConfig, convert
from .layers import lut_layers

CHECKPOINT_FORMAT = "lut_tvm.train.checkpoint"
CHECKPOINT_VERSION = 1


def _tensors(data) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data
    return torch.as_tensor(np.asarray(x), dtype=torch.float32), torch.as_tensor(np.asarray(y), dtype=torch.long)


def accuracy(model: nn.Module, data, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in eval mode (LUT layers run hard)."""
    x, y = _tensors(data)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(xb).argmax(-1) == yb).sum())
                      for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    model.train(was_training)
    return correct / len(y)


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """``torch.save`` to a temp file beside ``path``, then ``os.replace``: never a half-written file."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(state, handle)
    return path


def load_checkpoint(path: str | os.PathLike, recipe: str, settings: dict) -> dict:
    """Read a checkpoint and check it was written by the same recipe with the same settings
    (the number of epochs may differ: a run can be resumed to train longer)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
        raise LutTvmError(f"{str(path)!r} is not a version-{CHECKPOINT_VERSION} lut_tvm training checkpoint")
    if state.get("recipe") != recipe or state.get("settings") != settings:
        raise LutTvmError(f"checkpoint {str(path)!r} was written by recipe {state.get('recipe')!r} with "
                          f"settings {state.get('settings')}, not {recipe!r} with {settings}")
    return state


def fit(model: nn.Module, loss_fn, data, *, recipe: str, settings: dict, params, epochs: int, lr: float,
        batch_size: int, seed: int, checkpoint=None, eval_data=None) -> list[dict]:
    """The shared loop: ``loss_fn(x, y) -> (loss, logits)``; returns one record per epoch.

    ``settings`` (everything but ``epochs``) are stored in the checkpoint and must match on resume.
    """
    x, y = _tensors(data)
    optimizer = torch.optim.Adam(params, lr=lr)
    start, history = 0, []
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, recipe, settings)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = int(state["epoch"]), list(state["history"])
    steps = -(-len(x) // batch_size)
    bar = tqdm(total=max(epochs - start, 0) * steps, desc=recipe, unit="step")
    for epoch in range(start, epochs):
        torch.manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        model.train()
        total_loss = correct = seen = 0
        for index in order.split(batch_size):
            loss, logits = loss_fn(x[index], y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * len(index)
            correct += int((logits.argmax(-1) == y[index]).sum())
            seen += len(index)
            bar.update(1)
            shown = {"epoch": epoch + 1, "loss": f"{total_loss / seen:.4f}", "acc": f"{correct / seen:.3f}"}
            if history and "test_acc" in history[-1]:
                shown["test_acc"] = f"{history[-1]['test_acc']:.3f}"
            bar.set_postfix(shown)
        record = {"epoch": epoch + 1, "loss": total_loss / seen, "train_acc": correct / seen}
        if eval_data is not None:
            record["test_acc"] = accuracy(model, eval_data)
        history.append(record)
        if checkpoint is not None:
            save_checkpoint(checkpoint, {
                "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "recipe": recipe,
                "settings": settings, "epoch": epoch + 1, "history": history,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            })
    bar.close()
    model.eval()
    return history


def lut_parameters(model: nn.Module, with_weights: bool) -> list[nn.Parameter]:
    """The LUT layers' centroids, log-temperatures and free tables (if any), plus their weights and
    biases if asked."""
    names = ("centroids", "log_temperature", "tables") + (("weight", "bias") if with_weights else ())
    return [p for _, layer in lut_layers(model) for n, p in layer.named_parameters() if n in names]


def distillation_loss(logits, teacher_logits, labels, tau: float, weight: float) -> torch.Tensor:
    """``CE(logits, labels) + weight * tau^2 * KL(softmax(teacher/tau) || softmax(logits/tau))``."""
    kl = F.kl_div(F.log_softmax(logits / tau, -1), F.log_softmax(teacher_logits / tau, -1),
                  reduction="batchmean", log_target=True)
    return F.cross_entropy(logits, labels) + weight * tau * tau * kl


def train_lutnn(lut_model: nn.Module, teacher: nn.Module, train_data, *, epochs: int = 10,
                lr: float = 3e-3, batch_size: int = 64, tau: float = 4.0, distill_weight: float = 1.0,
                train_weights: bool = True, seed: int = 0, checkpoint=None, eval_data=None) -> list[dict]:
    """LUT-NN's recipe: Adam on cross-entropy plus distillation (KL at temperature ``tau``) from
    the original model's logits, over the centroids and temperatures and, with ``train_weights``,
    every weight and bias of the model."""
    teacher.eval()

    def loss_fn(x, y):
        with torch.no_grad():
            target = teacher(x)
        logits = lut_model(x)
        return distillation_loss(logits, target, y, tau, distill_weight), logits

    settings = {"lr": lr, "batch_size": batch_size, "tau": tau, "distill_weight": distill_weight,
                "train_weights": train_weights, "seed": seed, "samples": len(train_data[0])}
    params = lut_model.parameters() if train_weights else lut_parameters(lut_model, False)
    return fit(lut_model, loss_fn, train_data, recipe="lutnn", settings=settings, params=params,
               epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, checkpoint=checkpoint,
               eval_data=eval_data)


def low_data_subset(train_data, fraction: float, seed: int):
    """A seeded random ``fraction`` of ``(x, y)`` (at least one sample)."""
    x, y = train_data
    if not 0 < fraction <= 1:
        raise LutTvmError(f"fraction = {fraction} must be in (0, 1]")
    keep = np.random.default_rng(seed).permutation(len(x))[: max(1, round(fraction * len(x)))]
    return np.asarray(x)[np.sort(keep)], np.asarray(y)[np.sort(keep)]


def train_reconstruction(lut_model: nn.Module, teacher: nn.Module, train_data, *, fraction: float = 0.05,
                         epochs: int = 20, lr: float = 1e-2, batch_size: int = 32, task_weight: float = 0.0,
                         train_weights: bool = False, seed: int = 0, checkpoint=None,
                         eval_data=None) -> list[dict]:
    """Low-data recipe (after eLUT-NN): on a seeded ``fraction`` of the data, Adam on the sum over
    LUT layers of ``MSE(layer(x), original_layer(x))`` (same input ``x``), plus ``task_weight``
    times cross-entropy. Trains the LUT layers' centroids and temperatures (and their weights and
    biases with ``train_weights``); other layers stay frozen. Without a task loss each layer's
    input is detached, so every layer fits its own original."""
    layers = lut_layers(lut_model)
    originals = {name: teacher.get_submodule(name) for name, _ in layers}
    recorded: list[torch.Tensor] = []

    def detach_input(_module, args):
        return (args[0].detach(), *args[1:])

    def record(name):
        def hook(module, args, output):
            if not module.training:  # accuracy() between epochs
                return
            with torch.no_grad():
                target = originals[name](args[0])
            recorded.append(F.mse_loss(output, target))
        return hook

    def loss_fn(x, y):
        recorded.clear()
        logits = lut_model(x)
        loss = torch.stack(recorded).sum()
        if task_weight:
            loss = loss + task_weight * F.cross_entropy(logits, y)
        return loss, logits

    handles = [layer.register_forward_hook(record(name)) for name, layer in layers]
    if not task_weight:
        handles += [layer.register_forward_pre_hook(detach_input) for _, layer in layers]
    settings = {"fraction": fraction, "lr": lr, "batch_size": batch_size, "task_weight": task_weight,
                "train_weights": train_weights, "seed": seed, "samples": len(train_data[0])}
    try:
        return fit(lut_model, loss_fn, low_data_subset(train_data, fraction, seed), recipe="reconstruction",
                   settings=settings, params=lut_parameters(lut_model, train_weights),
                   epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, checkpoint=checkpoint,
                   eval_data=eval_data)
    finally:
        for handle in handles:
            handle.remove()


def kmeans_baseline(model: nn.Module, config: LutConfig | None = None, calibration_data=None) -> nn.Module:
    """MADDNESS-style baseline: k-means centroids on real inputs, no backpropagation (``convert``),
    with the tables refit by ridge regression when the config's policy asks (``refit_tables``)."""
    return convert(model, config, calibration_data).eval()
