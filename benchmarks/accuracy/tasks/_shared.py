"""Steps shared by the accuracy tasks: the reconstruction recipe and a CNN classifier's method rows."""

from __future__ import annotations

import torch
from torch import nn

from lut_tvm.policy import PlanPolicy
from lut_tvm.train import LutConfig, accuracy, train_lutnn, train_reconstruction

from ..common import ridge_baselines, run_recipes, seed_everything, size_and_ops, stopwatch
from ..compiled import compiled_row, framework_rows
from ..optimize_method import optimize_row

METHOD_GROUPS = ("every_layer", "optimize")  # the rows that replace every layer; lut_tvm.optimize's


def factory_meta(factory: str, **kwargs) -> dict:
    """How a speed-benchmark timing worker rebuilds a task's model: ``factory`` (``"module:function"``)
    called with ``kwargs``, its weights from the case folder's state dict."""
    return {"builder": "factory", "factory": factory, "kwargs": kwargs, "weights": "state_dict"}


def reconstruction_recipe(original: nn.Module, train_data, *, fraction: float, epochs: int, lr: float,
                          batch_size: int, train_weights: bool, seed: int) -> dict:
    """``{"reconstruction_<fraction>%": (train(model), settings)}``: per-layer MSE on ``fraction`` of ``train_data``."""
    def train(model):
        return train_reconstruction(model, original, train_data, fraction=fraction, epochs=epochs, lr=lr,
                                    batch_size=batch_size, train_weights=train_weights, seed=seed)

    settings = {"recipe": "train_reconstruction (per-layer MSE)", "epochs": epochs, "lr": lr,
                "batch_size": batch_size, "train_weights": train_weights, "fraction": fraction,
                "samples": max(1, round(fraction * len(train_data[0])))}
    return {f"reconstruction_{fraction:.0%}": (train, settings)}


def classifier_methods(original: nn.Module, train_data, test, convert_fn, *, seed: int, log, ridge_samples: int,
                       lutnn_epochs: int, recon_epochs: int, recon_lr: float, recon_train_weights: bool,
                       fraction: float, compiled: bool = False, groups=METHOD_GROUPS,
                       optimize: dict | None = None) -> tuple[dict, nn.Module | None]:
    """``(methods, kmeans)``: original, k-means (``convert_fn``), ridge refits, then LUT-NN and reconstruction
    (the ``every_layer`` group; ``kmeans`` is None without it), and ``lut_tvm.optimize`` (the ``optimize``
    group: ``optimize_method.optimize_row`` with the keyword arguments ``optimize``).

    ``compiled``: each row's ``acc`` is that of the model ``lut_tvm.compile`` builds (``compiled.compiled_row``:
    the LUT models through their exported plans), with its whole-model latency; the torch forward's
    accuracy is kept as ``acc_torch``, and the original row gets PyTorch and ONNX Runtime fp32 / int8 rows.
    The optimize row is always measured on the compiled model."""
    unknown = set(groups) - set(METHOD_GROUPS)
    if unknown:
        raise ValueError(f"classifier_methods: unknown method groups {sorted(unknown)} (known: {METHOD_GROUPS})")
    sample = torch.from_numpy(test[0][:1])

    def measure(model):
        if not compiled:
            return {"acc": accuracy(model, test), **size_and_ops(model, original, sample)}
        return {"acc_torch": accuracy(model, test), **compiled_row(model, test), **size_and_ops(model, original, sample)}

    def describe(row):
        if "compiled" not in row:
            return f"{row['acc']:.2%}"
        info = row["compiled"]
        return (f"{row['acc']:.2%} compiled ({row['acc_torch']:.2%} torch), {info['latency_ms']:.3f} ms per batch of "
                f"{info['batch']}, {info['threads']} thread(s), {info['lut_layers']} LUT layer(s)")

    methods = {"original": measure(original)}
    if compiled:
        methods["original"]["peers"] = framework_rows(original, test)
    log(f"  original: {describe(methods['original'])}")
    for row in methods["original"].get("peers", {}).values():
        log(f"    {row['name']}: " + (f"not measured: {row['error']}" if "error" in row else
                                     f"{row['acc']:.2%}, {row['latency_ms']:.3f} ms"))

    kmeans = None
    if "every_layer" in groups:
        kmeans = _every_layer_methods(original, train_data, convert_fn, methods, seed=seed, log=log, measure=measure,
                                      describe=describe, ridge_samples=ridge_samples, lutnn_epochs=lutnn_epochs,
                                      recon_epochs=recon_epochs, recon_lr=recon_lr,
                                      recon_train_weights=recon_train_weights, fraction=fraction)
    if "optimize" in groups:
        methods["optimize"] = optimize_row(original, train_data, test, seed=seed, log=log, **(optimize or {}))
    return methods, kmeans


def _every_layer_methods(original, train_data, convert_fn, methods: dict, *, seed, log, measure, describe,
                         ridge_samples, lutnn_epochs, recon_epochs, recon_lr, recon_train_weights, fraction):
    """The rows that replace every layer (``classifier_methods``' ``every_layer`` group) into ``methods``;
    returns the k-means model."""
    x_train, _ = train_data
    config = LutConfig(policy=PlanPolicy(seed=seed))
    seed_everything(seed)
    entry: dict = {}
    with stopwatch(entry):
        kmeans = convert_fn(original, config, x_train).eval()
    methods["kmeans"] = {**measure(kmeans), **entry}
    log(f"  k-means only: {describe(methods['kmeans'])} ({entry['seconds']:.0f} s)")
    refit = ridge_baselines(kmeans, original, x_train, methods, seed, measure, describe, log, samples=ridge_samples)
    recipes = {
        "lutnn": (lambda m: train_lutnn(m, original, train_data, epochs=lutnn_epochs, lr=1e-3, seed=seed),
                  {"recipe": "train_lutnn (CE + KL distillation, tau=4)", "epochs": lutnn_epochs, "lr": 1e-3,
                   "train_weights": True, "samples": len(x_train)}),
        **reconstruction_recipe(original, train_data, fraction=fraction, epochs=recon_epochs, lr=recon_lr,
                                batch_size=8, train_weights=recon_train_weights, seed=seed),
    }
    run_recipes(recipes, refit["kmeans_ridge_w"], methods, seed, measure, describe, log, start_name="kmeans_ridge_w")
    return kmeans
