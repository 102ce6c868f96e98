"""Task 3: MNIST-1D (generated locally by ``mnist1d.data.make_dataset``, published default arguments)
with a small 1-D CNN trained here (seeded, weights cached).

4,000 train / 1,000 test signals of length 40. CNN: conv1d 1->32 (k5), 32->32 (k3, stride 2),
32->32 (k3, stride 2), 32->32 (k3), fc 320->64, fc 64->10, ReLUs. LUT layers (``LutConv1d`` from
``lut_tvm.train.conv1d``, ``LutLinear``): every conv but the first (V = kernel length 3: C = 32) and
fc 320->64 (V = 16), K = 16; the first conv and the classifier stay dense.
No-backprop rows: k-means, then its tables refit by ridge regression (``common.ridge_baselines``:
free tables and refit weight); the learned recipes start from the refit-weight model.
Every row's accuracy is the compiled model's (``lut_tvm.compile`` of the exported plan: the conv1d
layers run as LUT kernels), with its whole-model latency (``benchmarks.accuracy.compiled``).
The "optimize" row: ``lut_tvm.optimize`` over every layer (``optimize_method``), compiled.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from lut_tvm.train.conv1d import convert_with_conv1d

from ..common import cached_training, layer_summary, seed_everything
from ..data import load_mnist1d
from ._shared import METHOD_GROUPS, classifier_methods, factory_meta

NAME = "mnist1d"


def cnn1d(width: int = 32) -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(1, width, 5, padding=2), nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),   # 20
        nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),   # 10
        nn.Conv1d(width, width, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(width * 10, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def train_cnn(model, x_train, y_train, epochs: int, seed: int, log) -> None:
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    steps = epochs * -(-len(x) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for index in torch.randperm(len(x), generator=generator).split(64):
            loss = F.cross_entropy(model(x[index]), y[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(index)
        if (epoch + 1) % 10 == 0:
            log(f"    CNN epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}")
    model.eval()


def conv1d_methods(original, train_data, test, *, seed: int, log, quick: bool, lutnn_epochs: int,
                   recon_epochs: int, fraction: float, groups=METHOD_GROUPS,
                   optimize: dict | None = None) -> tuple[dict, nn.Module | None]:
    """``classifier_methods`` for the 1-D CNN tasks: LutConv1d, ridge on 1,024 samples, tables-only reconstruction;
    every row measured on the compiled model (the conv1d layers as LUT kernels), with its latency.
    ``optimize``: the optimize row's keyword arguments (``optimize_method.optimize_row``)."""
    return classifier_methods(original, train_data, test, convert_with_conv1d, seed=seed, log=log,
                              ridge_samples=256 if quick else 1024, lutnn_epochs=lutnn_epochs,
                              recon_epochs=recon_epochs, recon_lr=1e-3, recon_train_weights=False, fraction=fraction,
                              compiled=True, groups=groups, optimize={"quick": quick, **(optimize or {})})


def run(seed: int = 0, cnn_epochs: int = 40, lutnn_epochs: int = 30, recon_epochs: int = 60,
        fraction: float = 0.01, log=print, quick: bool = False, groups=METHOD_GROUPS, optimize: dict | None = None) -> dict:
    if quick:
        cnn_epochs, lutnn_epochs, recon_epochs = 3, 1, 5
    x_train, y_train, x_test, y_test = load_mnist1d()
    test = (x_test, y_test)
    log(f"[{NAME}] {len(x_train)} train / {len(x_test)} test signals (mnist1d.make_dataset, seed 42)")
    settings = {"arch": "cnn1d-32", "epochs": cnn_epochs, "seed": seed, "data_seed": 42}
    original, cnn_info = cached_training(
        NAME, settings, cnn1d, lambda m: train_cnn(m, x_train, y_train, cnn_epochs, seed, log), log)
    methods, kmeans = conv1d_methods(original, (x_train, y_train), test, seed=seed, log=log, quick=quick,
                                     lutnn_epochs=lutnn_epochs, recon_epochs=recon_epochs, fraction=fraction,
                                     groups=groups, optimize={"task": NAME, "torch_meta": factory_meta(f"{__name__}:cnn1d"),
                                                              **(optimize or {})})
    return {
        "task": NAME, "title": "MNIST-1D, 1-D CNN (LutConv1d)", "metric": "acc", "unit": "sample",
        "data": "mnist1d.data.make_dataset (default args, seed 42): 4,000 train / 1,000 test, length 40",
        "model": "1-D CNN: conv1d 32 (k5), 3x conv1d 32 (k3; strides 2, 2, 1), fc 320->64, fc 64->10",
        "original_training": {**settings, **cnn_info},
        "lut_layers": layer_summary(kmeans) if kmeans is not None else None, "methods": methods,
    }
