"""The metric of a plan on the evaluation data: a torch forward with LUT layers, or the compiled model.

Two evaluators answer ``outputs(plan) -> model outputs on eval x``:

* ``TorchEvaluator`` (torch modules): the planned Linear / Conv2d modules are swapped for
  ``lut_tvm.train`` LUT layers in hard mode, which compute the compiled kernels' numerics (same
  codes, same INT8 tables; ``tests/lut_tvm/train/test_train_export.py``). Fast: no compile.
* ``CompiledEvaluator`` (``.onnx`` / ``.pt2`` files, and every final check): the model, imported
  once, compiled with the plan (``lut_tvm.compile``'s stages, default schedules, no tuning log)
  and run batch by batch. A small model builds in well under a second, so one compile per
  candidate is practical; it is also the ground truth the final plan is verified on.
"""

from __future__ import annotations

import numpy as np

from ..compiler import compile_imported
from ..frontends import ImportedModel
from ..plan import Plan, TableQuant
from ..runtime import CompiledModel


def metric_samples(metric: str, outputs: np.ndarray, reference: np.ndarray, labels) -> np.ndarray:
    """Each sample's share of the metric, in points: 100 if its argmax is its label (accuracy), else
    100 x its cosine to ``reference``."""
    outputs = outputs.reshape(len(outputs), -1).astype(np.float64)
    if metric == "accuracy":
        return (outputs.argmax(-1) == labels) * 100.0
    reference = reference.reshape(len(reference), -1).astype(np.float64)
    norms = np.linalg.norm(outputs, axis=1) * np.linalg.norm(reference, axis=1)
    return (outputs * reference).sum(1) / np.maximum(norms, 1e-30) * 100.0


def metric_value(metric: str, outputs: np.ndarray, reference: np.ndarray, labels) -> float:
    """Accuracy (argmax vs ``labels``) or mean cosine to ``reference``, in points (x 100)."""
    return float(metric_samples(metric, outputs, reference, labels).mean())


# Standard errors of a plan's eval loss that the search adds to it before holding it to the budget. One was
# too few on data the optimizer never saw: a plan picked among many on the eval data is the one whose loss
# there happened to be low (an unseen wide MLP: 0.30 points on 1,000 eval samples, 1.33 on 1,500 others).
MARGIN_STANDARD_ERRORS = 2.0


def loss_standard_error(metric: str, outputs: np.ndarray, reference: np.ndarray, labels) -> float:
    """The standard error (points) of the loss of ``outputs`` against the original's ``reference``
    measured on these samples: the standard deviation of the per-sample differences over sqrt(n)."""
    ours = metric_samples(metric, outputs, reference, labels)
    theirs = metric_samples(metric, reference, reference, labels)
    if len(ours) < 2:
        return 0.0
    return float(np.std(ours - theirs, ddof=1) / np.sqrt(len(ours)))


def loss_margin(metric: str, outputs: np.ndarray, reference: np.ndarray, labels) -> float:
    """``MARGIN_STANDARD_ERRORS`` standard errors of the loss (``loss_standard_error``). A plan that flips
    many predictions both ways can lose little on the eval data and much on other data; the search counts a
    plan's loss plus this margin against the budget."""
    return MARGIN_STANDARD_ERRORS * loss_standard_error(metric, outputs, reference, labels)


def run_batched(fn, x: np.ndarray, batch: int) -> np.ndarray:
    """``fn`` over ``x`` in chunks of exactly ``batch`` samples (the last one zero-padded)."""
    outs = []
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        short = batch - len(chunk)
        if short:
            chunk = np.concatenate([chunk, np.zeros((short, *chunk.shape[1:]), chunk.dtype)])
        out = np.asarray(fn(chunk))
        outs.append(out[: len(out) - short] if short else out)
    return np.concatenate(outs)


class CompiledEvaluator:
    """Outputs of ``model`` compiled with a plan (default schedules), on ``x`` in model batches."""

    kind = "compiled"

    def __init__(self, imported: ImportedModel, x: np.ndarray, target, batch: int):
        self.imported, self.x, self.target, self.batch = imported, x, target, batch
        self._dense: CompiledModel | None = None  # the model without a plan, compiled once

    def compiled(self, plan: Plan | None) -> CompiledModel:
        if plan is not None and plan.layers:
            return compile_imported(self.imported, plan, self.target)
        if self._dense is None:
            self._dense = compile_imported(self.imported, None, self.target)
        return self._dense

    def outputs(self, plan: Plan | None) -> np.ndarray:
        return run_batched(self.compiled(plan), self.x, self.batch)


def torch_layer_modules(module, names) -> dict | None:
    """``{plan name: Linear / Conv2d submodule}``, or None where a name is no such submodule."""
    from torch import nn  # pylint: disable=import-outside-toplevel

    found = {}
    for name in names:
        try:
            sub = module.get_submodule(name)
        except AttributeError:
            return None
        if not isinstance(sub, (nn.Linear, nn.Conv2d)):
            return None
        found[name] = sub
    return found


def _frozen_lut_rows(self, rows):
    """A Linear LUT layer's hard forward with its INT8 tables built once (``self.frozen_tables``): the
    same codes (``centroid_distances`` argmin, first on ties) and the same exact integer sums as
    ``train.layers.hard_output``, read by ``embedding_bag`` instead of a one-hot matmul (at small V,
    ``C*K`` is many times ``D``: the one-hot matmul costs several dense layers)."""
    import torch  # pylint: disable=import-outside-toplevel
    from ..train.layers import centroid_distances  # pylint: disable=import-outside-toplevel

    levels, scale = self.frozen_tables
    num_codebooks, num_centroids, sub_len = self.centroids.shape
    dist = centroid_distances(rows.reshape(len(rows), num_codebooks, sub_len), self.centroids)
    codes = dist.argmin(-1) + torch.arange(num_codebooks) * num_centroids
    out = (torch.nn.functional.embedding_bag(codes, levels, mode="sum") * scale).to(rows.dtype)
    return out if self.bias is None else out + self.bias


def _freeze(lut) -> None:
    """Build ``lut``'s INT8 tables once and read them by code (``_frozen_lut_rows``); inference only."""
    import types  # pylint: disable=import-outside-toplevel

    import torch  # pylint: disable=import-outside-toplevel
    from ..train.layers import build_tables, quantize_tables  # pylint: disable=import-outside-toplevel

    with torch.no_grad():
        tables = build_tables(lut.centroids.double(), lut.weight_dn().double())
        levels, scale = quantize_tables(tables, TableQuant(lut.table_quant).granularity)
    lut.frozen_tables = (levels.to(torch.float32).reshape(-1, levels.shape[-1]), scale.to(torch.float32))
    lut.lut_rows = types.MethodType(_frozen_lut_rows, lut)


def _int8_linear(linear, act_bits: int = 8):
    """A module computing ``linear`` as the compiled int8 dense layer does (``lut_tvm.int8_reference``,
    NumPy, activations of ``act_bits``; inference only)."""
    import torch  # pylint: disable=import-outside-toplevel
    from ..int8_reference import int8_dense  # pylint: disable=import-outside-toplevel

    weight_dn = linear.weight.detach().numpy().T
    bias = None if linear.bias is None else linear.bias.detach().numpy()

    class Int8Linear(torch.nn.Module):
        """``int8_dense(x, W, bias, act_bits)`` of the wrapped Linear."""

        def forward(self, x):
            return torch.from_numpy(int8_dense(x.detach().numpy(), weight_dn, bias, act_bits)).to(x.dtype)

    return Int8Linear()


def lut_modules(module, plan: Plan, frozen: bool = False) -> dict:
    """``{name: hard-forward lut_tvm.train LUT layer}`` of ``plan``'s layers of the torch ``module``
    (its Linear / Conv2d submodules, k-means centroids and table scales of the plan; not swapped in).
    ``frozen``: Linear layers for inference only, tables built once (``_freeze``; same outputs)."""
    from torch import nn  # pylint: disable=import-outside-toplevel
    from ..train.layers import LutConv2d, LutLinear  # pylint: disable=import-outside-toplevel

    made = {}
    for layer in plan.layers:
        original = module.get_submodule(layer.name)
        if layer.is_int8:
            made[layer.name] = _int8_linear(original, layer.act_bits)
            continue
        make = LutConv2d.from_conv if isinstance(original, nn.Conv2d) else LutLinear.from_linear
        lut = make(original, layer.centroids).eval()
        lut.table_quant = layer.table_quant
        if frozen and isinstance(lut, LutLinear):
            _freeze(lut)
        made[layer.name] = lut
    return made


class TorchEvaluator:
    """Outputs of a torch module whose planned layers run as hard-forward ``lut_tvm.train`` layers
    (in chunks of about ``batch`` samples: a module that trims padding per chunk gains from small ones)."""

    kind = "torch"

    def __init__(self, module, x: np.ndarray, batch: int = 64):
        import torch  # pylint: disable=import-outside-toplevel

        self.module, self.x, self.batch, self.torch = module.eval(), x, batch, torch

    def outputs(self, plan: Plan | None) -> np.ndarray:
        from ..train.layers import replace_module  # pylint: disable=import-outside-toplevel

        torch = self.torch
        swapped = []
        for name, lut in (lut_modules(self.module, plan, frozen=True) if plan else {}).items():
            swapped.append((name, self.module.get_submodule(name)))
            replace_module(self.module, name, lut)
        try:
            with torch.no_grad():
                return np.concatenate([self.module(torch.from_numpy(chunk)).numpy()
                                       for chunk in np.array_split(self.x, max(1, len(self.x) // self.batch))])
        finally:
            for name, original in swapped:
                replace_module(self.module, name, original)
