"""MADDNESS's ridge refit of a k-means LUT model's tables, on the torch side (see ``lut_tvm.ridge``).

``ridge_refit`` goes through the LUT layers in forward order. For each it records, on the same
calibration samples and the same (seeded) subset of rows, the layer's input rows in the LUT model
(``sequential``: earlier layers already LUTs and refit, so the fit also absorbs their error) or in
the original model (MADDNESS: each layer on its own), and the original model's exact output of
that layer (without bias). Then ``TableRefit.RIDGE`` gives the layer free tables
(``LutLayer.set_tables``) and ``TableRefit.RIDGE_WEIGHT`` replaces its weight by the refit ``W'``
(tables ``P . W'``: ``export_plan`` / ``to_dense_model`` / ``lut_tvm.compile`` take it as is).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import LutTvmError
from ..policy import TableRefit
from ..ridge import check_ridge_lambda, ridge_tables, ridge_weight
from .batches import iter_batches
from .layers import LutLayer, lut_layers

LOG = logging.getLogger("lut_tvm")


class _Stop(Exception):
    """Raised by a recording hook once the wanted layer has run: the rest of the forward is skipped."""


def layer_rows(layer: LutLayer, inputs: torch.Tensor) -> torch.Tensor:
    """The rows ``[M, D]`` ``layer`` multiplies by its weight for ``inputs`` (any model's tensor at
    that layer: the geometry is the LUT layer's)."""
    return layer.rows(inputs)[0] if hasattr(layer, "rows") else inputs.reshape(-1, inputs.shape[-1])


def _record_rows(model: nn.Module, name: str, layer: LutLayer, data, batch_size: int, samples: int,
                 max_rows_per_batch: int, seed: int) -> np.ndarray:
    """Rows at module path ``name`` of ``model`` over the first ``samples`` of ``data``: per batch, a
    subset picked from ``(seed, batch index)`` only, so two models give the same rows' positions."""
    found: list[np.ndarray] = []
    batch_index = [0]

    def hook(_module, args):
        rows = layer_rows(layer, args[0].detach())
        if len(rows) > max_rows_per_batch:
            rng = np.random.default_rng([seed, batch_index[0]])
            rows = rows[np.sort(rng.choice(len(rows), max_rows_per_batch, replace=False))]
        found.append(rows.double().cpu().numpy())
        raise _Stop

    handle = model.get_submodule(name).register_forward_pre_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x in iter_batches(data, batch_size, samples):
                try:
                    model(x.to(torch.float32))
                except _Stop:
                    pass
                batch_index[0] += 1
    finally:
        handle.remove()
        model.train(was_training)
    if not found:
        raise LutTvmError(f"ridge refit: the calibration data never reached layer {name!r}")
    return np.concatenate(found)


def _dense_weight(module: nn.Module) -> np.ndarray:
    """``[D, N]`` float64 weight of a Linear / Conv1d / Conv2d / LUT layer."""
    weight = module.weight.detach().double()
    return weight.reshape(weight.shape[0], -1).t().cpu().numpy()


def ridge_refit(lut_model: nn.Module, original: nn.Module, calibration_data, refit=TableRefit.RIDGE,
                ridge_lambda: float = 1.0, *, sequential: bool = True, samples: int = 256,
                batch_size: int = 64, max_rows: int = 8192, seed: int = 0) -> nn.Module:
    """Refit every LUT layer of ``lut_model`` (in place; returned) by ridge regression on the outputs
    of the same layer in ``original`` (same module paths), over ``samples`` calibration samples and
    at most ``max_rows`` rows per layer. See the module doc for ``refit`` and ``sequential``."""
    refit = TableRefit(refit)
    if refit is TableRefit.NONE:
        return lut_model
    ridge_lambda = check_ridge_lambda(ridge_lambda, "ridge_refit: ridge_lambda")
    batches = -(-min(samples, len(calibration_data)) // batch_size) if hasattr(calibration_data, "__len__") else 1
    per_batch = max(1, max_rows // max(batches, 1))
    for index, (name, layer) in enumerate(tqdm(lut_layers(lut_model), desc=f"{refit.value} refit", unit="layer")):
        if layer.tables is not None:
            raise LutTvmError(f"ridge_refit: LUT layer {name!r} already has free tables")
        if getattr(layer, "groups", 1) > 1:
            raise LutTvmError(f"ridge_refit: LUT layer {name!r} is a grouped conv (groups = {layer.groups}): "
                              "no table refit; exclude it from the policy")
        record = lambda model: _record_rows(model, name, layer, calibration_data, batch_size,  # noqa: E731
                                            samples, per_batch, seed + index)
        exact_rows = record(original)
        target = exact_rows @ _dense_weight(original.get_submodule(name))
        rows = record(lut_model) if sequential else exact_rows
        centroids = layer.centroids.detach().double().cpu().numpy()
        where = f"ridge refit of layer {name!r}"
        if refit is TableRefit.RIDGE:
            layer.set_tables(ridge_tables(rows, centroids, target, ridge_lambda, where))
        else:
            refit_weight = ridge_weight(rows, centroids, target, ridge_lambda, where)
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(refit_weight.T).reshape(layer.weight.shape))
        LOG.info("%s: %s refit on %d rows (lambda %g)", name, refit.value, len(rows), ridge_lambda)
    return lut_model
