"""Optional fine-tuning of the chosen plan with lut_tvm.train's LUT-NN recipe (torch modules only)."""

from __future__ import annotations

import numpy as np

from ..errors import LutTvmError
from ..policy import PlanPolicy
from .layers import NUM_CENTROIDS, num_centroids_of


def finetune_plan(model, choice: dict[str, int], calibration: np.ndarray, train_data, epochs: int,
                  seed: int = 0, lr: float = 1e-3):
    """``(fine-tuned dense model, its plan)``: ``choice``'s layers converted to LUT layers (k-means on
    ``calibration``), trained ``epochs`` epochs by ``train_lutnn`` (task loss + distillation from
    ``model``) on ``train_data = (x, y)``, exported as the plan and the dense model it binds to."""
    return exported(finetune_lut(model, choice, calibration, train_data, epochs, seed, lr), epochs)


def training_data(train_data) -> tuple[np.ndarray, np.ndarray]:
    """``(x float32, y int64)`` of ``finetune_data``, or a LutTvmError saying what is wrong with it."""
    if train_data is None or len(train_data) != 2:
        raise LutTvmError("optimize: finetune needs finetune_data = (x, y) training samples and integer labels")
    x, y = np.asarray(train_data[0], dtype=np.float32), np.asarray(train_data[1]).astype(np.int64)
    if len(x) != len(y):
        raise LutTvmError(f"optimize: finetune_data has {len(x)} samples but {len(y)} labels")
    return x, y


def exported(lut, epochs: int):
    """``(dense model, plan)`` of a trained LUT model (``train.export_plan`` / ``train.to_dense_model``)."""
    from ..train import export_plan, to_dense_model  # pylint: disable=import-outside-toplevel

    lut.eval()
    plan = export_plan(lut, provenance={"method": "optimize+finetune", "epochs": epochs})
    return to_dense_model(lut).eval(), plan


def finetune_lut(model, choice: dict[str, int], calibration: np.ndarray, train_data, epochs: int,
                 seed: int = 0, lr: float = 1e-3):
    """``finetune_plan``'s trained LUT model (its LUT layers still trainable: ``trained_extend`` goes on
    training it)."""
    import torch.nn as nn  # pylint: disable=import-outside-toplevel

    # pylint: disable-next=import-outside-toplevel
    from ..train import LutConfig, convert, convert_with_conv1d, lut_layers, train_lutnn

    x, y = training_data(train_data)
    centroids = {num_centroids_of(option) for option in choice.values()}
    if len(centroids) > 1:
        raise LutTvmError(f"optimize: finetune trains one K for every layer; the plan mixes K = {sorted(centroids)}")
    policy = PlanPolicy(only=list(choice), sub_len_overrides={n: int(v) for n, v in choice.items()},
                        num_centroids=centroids.pop() if centroids else NUM_CENTROIDS, skip_first_conv=False,
                        skip_last_dense=False, seed=seed)
    # ``convert`` takes Linear / Conv2d layers only: a chosen Conv1d would silently stay dense
    conv1d_chosen = any(type(module) is nn.Conv1d for name, module in model.named_modules() if name in choice)
    to_lut = convert_with_conv1d if conv1d_chosen else convert
    lut = to_lut(model, LutConfig(policy=policy, calibration_samples=len(calibration)), calibration)
    missing = set(choice) - {name for name, _ in lut_layers(lut)}
    if missing:
        raise LutTvmError(f"optimize: finetune could not make these chosen layers LUTs: {sorted(missing)}")
    train_lutnn(lut, model, (x, y), epochs=epochs, lr=lr, seed=seed)
    return lut.eval()
