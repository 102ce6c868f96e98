"""Shared pieces of the accuracy tasks: seeding, cached trained weights, timing, result rows."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lut_tvm.policy import TableRefit
from lut_tvm.train import lut_layers, ridge_refit

from .data import cache_dir
from .measures import count_ops, model_bytes, replaced_weight_bytes


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def stopwatch(store: dict, key: str = "seconds"):
    """Wall seconds in ``store[key]`` and this process's CPU seconds in ``store["cpu_" + key]`` (on a
    shared machine the CPU time, with one torch thread, is closer to what an idle machine takes)."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        store[key] = round(time.perf_counter() - start, 2)
        store[f"cpu_{key}"] = round(time.process_time() - cpu, 2)


def weights_path(name: str, settings: dict) -> Path:
    """Where trained weights for ``name`` with ``settings`` are cached (keyed by a settings hash)."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{name}-{key}.pt"


def cached_training(name: str, settings: dict, build, train, log) -> tuple[nn.Module, dict]:
    """``build()`` a model and load its cached weights, or ``train(model)`` and cache them.

    Returns the model (eval mode) and ``{"cached": bool, "seconds": training time or 0}``.
    """
    path = weights_path(name, settings)
    model = build()
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        log(f"  {name}: loaded cached weights {path}")
        return model.eval(), {"cached": True, "seconds": 0.0, "path": str(path)}
    info: dict = {"cached": False}
    with stopwatch(info):
        train(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    log(f"  {name}: trained in {info['seconds']:.0f} s, weights cached at {path}")
    info["path"] = str(path)
    return model.eval(), info


def size_and_ops(model: nn.Module, original: nn.Module, sample, per: int = 1, call=None) -> dict:
    """The ``bytes`` and ``ops`` entries of a result row (see ``measures``)."""
    sizes = model_bytes(model)
    if lut_layers(model):
        sizes["replaced_weights_fp32"] = replaced_weight_bytes(original, model)
    return {"bytes": sizes, "ops": count_ops(model, sample, per, call)}


def layer_summary(lut_model: nn.Module) -> list[dict]:
    return [{"name": name, "type": type(layer).__name__, "C": int(layer.centroids.shape[0]),
             "K": int(layer.centroids.shape[1]), "V": int(layer.centroids.shape[2]),
             "N": int(layer.weight_dn().shape[1])} for name, layer in lut_layers(lut_model)]


RIDGE_ROWS = {"kmeans_ridge": TableRefit.RIDGE, "kmeans_ridge_w": TableRefit.RIDGE_WEIGHT}


def ridge_baselines(kmeans: nn.Module, original: nn.Module, data, methods: dict, seed: int, measure, describe,
                    log, ridge_lambda: float = 1.0, samples: int = 512, batch_size: int = 64,
                    max_rows: int = 8192) -> dict[str, nn.Module]:
    """The no-backprop rows after "kmeans": its tables refit by ridge regression, sequentially
    (``lut_tvm.train.ridge_refit``), as free tables (MADDNESS) and as a refit weight (compilable).

    Each row's ``seconds`` / ``cpu_seconds`` include the k-means time; returns the refit models.
    """
    models = {}
    for name, refit in RIDGE_ROWS.items():
        model = copy.deepcopy(kmeans)
        seed_everything(seed)
        entry = {"training": {"refit": refit.value, "ridge_lambda": ridge_lambda, "sequential": True,
                              "samples": samples, "max_rows": max_rows}}
        with stopwatch(entry, "refit_seconds"):
            ridge_refit(model, original, data, refit, ridge_lambda, samples=samples, batch_size=batch_size,
                        max_rows=max_rows, seed=seed)
        entry["seconds"] = round(entry["refit_seconds"] + methods["kmeans"]["seconds"], 2)
        entry["cpu_seconds"] = round(entry["cpu_refit_seconds"] + methods["kmeans"].get("cpu_seconds", 0), 2)
        methods[name] = {**measure(model.eval()), **entry}
        models[name] = model
        log(f"  {name}: {describe(methods[name])} (refit {entry['refit_seconds']:.0f} s)")
    return models


def run_recipes(recipes: dict, start: nn.Module, methods: dict, seed: int, measure, describe, log,
                start_name: str = "kmeans") -> None:
    """Train a copy of the ``start_name`` model ``start`` with each recipe; ``methods[name]`` gets its measures.

    ``recipes`` maps a name to ``(train(model), settings)``; ``measure(model)`` returns the
    result columns; ``describe(row)`` is the log line's text for a result row. The time to build
    the start model (``methods[start_name]``) is kept beside each recipe's own.
    """
    for name, (train, info) in recipes.items():
        model = copy.deepcopy(start)
        seed_everything(seed)
        entry = {"training": {**info, "start": start_name}}
        with stopwatch(entry):
            train(model)
        entry["kmeans_seconds"] = methods[start_name]["seconds"]
        entry["kmeans_cpu_seconds"] = methods[start_name].get("cpu_seconds", 0)
        methods[name] = {**measure(model.eval()), **entry}
        log(f"  {name}: {describe(methods[name])} ({entry['seconds']:.0f} s)")
