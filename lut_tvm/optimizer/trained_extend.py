"""The trained extension of a fine-tuned plan: candidates the search rejected, each trained into the plan and kept if it fits."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import LutTvmError
from ..policy import PlanPolicy
from .evaluate import CompiledEvaluator, run_batched
from .finetune import exported, training_data
from .inputs import import_checked, is_torch_module
from .layers import NUM_CENTROIDS, is_int8, num_centroids_of, option_label
from .search import Candidate

LOG = logging.getLogger("lut_tvm")
KEPT = "chosen after fine-tuning (trained into the plan)"
REJECTED = "tried after fine-tuning: the trained plan broke the budget"


@dataclass
class ExtendSetup:
    """What the extension needs from ``optimize``: the original torch ``model`` (the distillation
    teacher), the ``calibration`` rows (k-means of an added layer), ``train_data = (x, y)``, the eval
    data, target and model batch, ``metrics`` (``api._Metrics``: the original metric, ``of_outputs``,
    ``margin_of_outputs``), ``epochs`` of ``train_lutnn`` per try, and ``complete(plan, imported)``:
    the plan plus its int8 layers bound to a trained copy's weights."""

    model: object
    calibration: np.ndarray
    train_data: tuple
    eval_x: np.ndarray
    target: object
    batch: int
    metrics: object
    epochs: int
    seed: int = 0
    lr: float = 1e-3
    complete: Callable = field(default=lambda plan, _imported: plan)


@dataclass
class Extension:
    """The plan after the extension: its choice, dense model (and its import), plan, compiled model and
    compiled loss (None where no candidate was kept), and a report row per candidate tried."""

    choice: dict
    model: object = None
    plan: object = None
    compiled: object = None
    loss: float | None = None
    imported: object = None
    rows: list = field(default_factory=list)


def extension_order(candidates: list[Candidate], choice: dict, num_centroids: int) -> list[Candidate]:
    """The candidates to try: one LUT option per layer not in ``choice`` (its best saving per point
    lost alone, among the options with a saving at ``num_centroids``: the LUT-NN recipe trains one K),
    best saving per point first."""
    best: dict[str, Candidate] = {}
    for cand in candidates:
        if (cand.layer in choice or is_int8(cand.sub_len) or cand.saving_ms <= 0
                or num_centroids_of(cand.sub_len) != num_centroids or not np.isfinite(cand.loss_alone)):
            continue
        if cand.layer not in best or (cand.score, cand.saving_ms) > (best[cand.layer].score, best[cand.layer].saving_ms):
            best[cand.layer] = cand
    return sorted(best.values(), key=lambda c: (-c.score, -c.saving_ms, c.layer))


def plan_centroids(choice: dict) -> int:
    """The K of the plan's LUT layers (``NUM_CENTROIDS`` if it has none)."""
    ks = {num_centroids_of(option) for option in choice.values() if not is_int8(option)}
    if len(ks) > 1:
        raise LutTvmError(f"optimize: the fine-tuned plan mixes K = {sorted(ks)}; its extension trains one K")
    return ks.pop() if ks else NUM_CENTROIDS


def with_layer(base, name: str, option, calibration: np.ndarray, seed: int):
    """A copy of the (partly LUT) torch model ``base`` with layer ``name`` as a k-means-initialised LUT
    layer of ``option`` (rows recorded on ``base``: the inputs its LUT layers feed the layer)."""
    import torch.nn as nn  # pylint: disable=import-outside-toplevel

    from ..train import LutConfig, lut_layers  # pylint: disable=import-outside-toplevel
    from ..train.conv1d import convert_conv1d_kmeans  # pylint: disable=import-outside-toplevel
    from ..train.convert import convert_kmeans  # pylint: disable=import-outside-toplevel

    policy = PlanPolicy(only=[name], sub_len_overrides={name: int(option)}, num_centroids=num_centroids_of(option),
                        skip_first_conv=False, skip_last_dense=False, seed=seed)
    config = LutConfig(policy=policy, calibration_samples=len(calibration))
    convert = convert_conv1d_kmeans if type(base.get_submodule(name)) is nn.Conv1d else convert_kmeans
    lut = convert(base, config, calibration)
    if name not in {n for n, _ in lut_layers(lut)}:
        raise LutTvmError(f"optimize: the trained extension could not make layer {name!r} a LUT")
    return lut


def compiled_loss(setup: ExtendSetup, lut) -> tuple:
    """``(dense model, plan, compiled model, loss, loss + margin, imported dense model)`` of a trained LUT model
    on the eval data."""
    dense, plan = exported(lut, setup.epochs)
    imported, _ = import_checked(dense, setup.calibration, setup.eval_x, setup.batch)
    plan = setup.complete(plan, imported)
    compiled = CompiledEvaluator(imported, setup.eval_x, setup.target, setup.batch).compiled(plan)
    outputs = run_batched(compiled, setup.eval_x, setup.batch)
    loss = setup.metrics.original - setup.metrics.of_outputs(outputs)
    return dense, plan, compiled, loss, loss + setup.metrics.margin_of_outputs(outputs), imported


def _try(setup: ExtendSetup, base, cand: Candidate, data) -> tuple:
    """``(trained LUT model, compiled_loss(...))`` of ``base`` plus ``cand``."""
    from ..train import train_lutnn  # pylint: disable=import-outside-toplevel

    lut = with_layer(base, cand.layer, cand.sub_len, setup.calibration, setup.seed)
    train_lutnn(lut, setup.model, data, epochs=setup.epochs, lr=setup.lr, seed=setup.seed)
    return lut.eval(), compiled_loss(setup, lut)


def extend_trained(setup: ExtendSetup, base, choice: dict, candidates: list[Candidate], budget: float,
                   max_layers: int, max_seconds: float | None = None) -> Extension:
    """The fine-tuned plan ``choice`` (``base``: its trained LUT model, or None for the original model
    when it has no LUT layer) extended by the candidates the search left out (``extension_order``): each
    added as a LUT layer, the model trained ``setup.epochs`` epochs by ``train_lutnn`` (task loss +
    distillation from the original), compiled, and kept if its loss plus margin on the eval data stays
    within ``budget``; the next one starts from the last plan kept. Stops after ``max_layers`` tries or
    once ``max_seconds`` have passed."""
    if not is_torch_module(setup.model):
        raise LutTvmError("optimize: finetune_extend needs a torch module (an .onnx / .pt2 file has no trainable "
                          "layers)")
    data = training_data(setup.train_data)
    result = Extension(dict(choice))
    base = setup.model if base is None else base
    start = time.perf_counter()
    for cand in extension_order(candidates, choice, plan_centroids(choice))[:max(0, max_layers)]:
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
        began = time.perf_counter()
        lut, (dense, plan, compiled, loss, guarded, imported) = _try(setup, base, cand, data)
        kept = guarded <= budget
        result.rows.append({"layer": cand.layer, "option": option_label(cand.sub_len), "saving_ms": cand.saving_ms,
                            "loss_alone": cand.loss_alone, "loss": loss, "guarded_loss": guarded, "kept": kept,
                            "seconds": time.perf_counter() - began})
        LOG.info("optimize: trained extension %s %s: loss %.2f (+ margin %.2f), %s", cand.layer,
                 option_label(cand.sub_len), loss, guarded, "kept" if kept else "rejected")
        cand.loss_with_plan = guarded
        cand.status = KEPT if kept else REJECTED
        if kept:
            base = lut
            result.choice[cand.layer] = cand.sub_len
            result.model, result.plan, result.compiled, result.loss, result.imported = dense, plan, compiled, loss, imported
    return result
