"""Per-layer mixed-precision search: each layer's weight bits (2..8) at least cost, accuracy bounded.

The search (greedy, sensitivity-ordered; deterministic, so a seed only fixes torch's state):

1. the float model's accuracy ``a_f`` on the **validation** data (held out from training and
   never the test split) sets the floor ``a_f - bound`` (``bound`` in accuracy points, default 1);
2. all layers at ``max_bits`` (8): if that misses the floor the search stops there (``met`` False);
3. sensitivity: each layer alone is lowered from ``max_bits - 1`` down, the others at
   ``max_bits``, until its accuracy falls under the floor: ``lowest[l]`` is the lowest ``b``
   that still met it (each layer on its own, at most 6 evaluations per layer);
4. layers in order of the cost they save at ``lowest[l]`` (largest first) are lowered jointly:
   ``b`` from ``lowest[l]`` upward, the first that keeps the *whole* model on the floor is kept.

Every configuration the search returns has been measured on the floor. The cost is the exact-LUT
total of ``lut_tvm.exact.cost`` (``metric="energy"``: estimated pJ; ``"lookups"``: table reads)
with each layer's rows = output positions per sample, so the result is never costlier than
all-``max_bits``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..weights import as_dense_matrix
from .cost import CostParams, ModelCost, layer_cost
from .plan import ExactPlan
from .quantize import CalibratedLayer, build_plan, calibrate_layers, evaluate_quantized, predict
from .reference import MAX_BITS, MIN_BITS, quantize_weight
from .reference.quant import SEARCH_MIN_BITS

LOG = logging.getLogger("lut_tvm")
METRICS = ("energy", "lookups")


class CostTable:
    """Exact-LUT costs of every calibrated layer at every bit width, computed once."""

    def __init__(self, layers: list[CalibratedLayer], params: CostParams | None = None):
        self.layers, self.params, self._cache = layers, params or CostParams(), {}

    def layer(self, layer: CalibratedLayer, bits: int):
        key = (layer.name, bits)
        if key not in self._cache:
            wq = quantize_weight(as_dense_matrix(layer.kind, layer.weight), bits)[0]
            self._cache[key] = layer_cost(layer.name, wq, bits, layer.rows_per_sample, params=self.params)
        return self._cache[key]

    def model(self, bits: dict[str, int]) -> ModelCost:
        return ModelCost([self.layer(layer, bits[layer.name]) for layer in self.layers], self.params)

    def of_layer(self, layer: CalibratedLayer, bits: int, metric: str) -> float:
        cost = self.layer(layer, bits)
        return cost.energy_pj["exact_lut"] if metric == "energy" else float(cost.lookups)

    def total(self, bits: dict[str, int], metric: str) -> float:
        return float(sum(self.of_layer(layer, bits[layer.name], metric) for layer in self.layers))


@dataclass
class SearchResult:
    """The chosen bits per layer, their plan, accuracies (fractions) and costs."""

    bits: dict
    plan: ExactPlan
    float_accuracy: float
    accuracy: float
    max_bits_accuracy: float
    bound_points: float
    met: bool
    metric: str
    cost: float
    max_bits_cost: float
    evaluations: int
    history: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("plan",)}


def search_bits(model: nn.Module, calibration, validation, *, bound: float = 1.0, metric: str = "energy",
                min_bits: int = SEARCH_MIN_BITS, max_bits: int = MAX_BITS, layers: list[CalibratedLayer] | None = None,
                params: CostParams | None = None, batch_size: int = 256, seed: int = 0,
                progress: bool = True) -> SearchResult:
    """Search per-layer bits for ``model``; ``validation = (x, y)``, ``bound`` in accuracy points.

    ``layers`` (from ``quantize.calibrate_layers``) skips the calibration when given.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if not MIN_BITS <= min_bits <= max_bits <= MAX_BITS:
        raise ValueError(f"need {MIN_BITS} <= min_bits <= max_bits <= {MAX_BITS}, got {min_bits}, {max_bits}")
    if bound < 0:
        raise ValueError(f"accuracy bound must be >= 0 points, got {bound!r}")
    torch.manual_seed(seed)
    layers = layers or calibrate_layers(model, calibration, batch_size=batch_size, seed=seed)
    costs = CostTable(layers, params)
    x_val, y_val = validation
    float_acc = float((predict(model, x_val, batch_size).argmax(-1) == np.asarray(y_val)).mean())
    floor = float_acc - bound / 100.0
    history: list[dict] = []
    bar = tqdm(total=1 + len(layers) * (max_bits - min_bits), desc="mixed precision", unit="eval",
               disable=not progress)

    def evaluate(bits: dict[str, int], step: str) -> float:
        acc = evaluate_quantized(model, build_plan(layers, bits), validation, batch_size)
        history.append({"step": step, "bits": dict(bits), "accuracy": acc,
                        "cost": costs.total(bits, metric)})
        bar.update(1)
        bar.set_postfix({"acc": f"{acc:.4f}", "floor": f"{floor:.4f}"})
        return acc

    bits = {layer.name: max_bits for layer in layers}
    top_acc = evaluate(bits, "all max_bits")
    top_cost = costs.total(bits, metric)
    if top_acc >= floor:
        lowest = {}
        for layer in layers:
            lowest[layer.name] = max_bits
            for b in range(max_bits - 1, min_bits - 1, -1):
                if evaluate({**bits, layer.name: b}, f"sensitivity {layer.name}") < floor:
                    break
                lowest[layer.name] = b
        by_name = {layer.name: layer for layer in layers}
        saving = {layer.name: costs.of_layer(layer, max_bits, metric)
                  - costs.of_layer(layer, lowest[layer.name], metric) for layer in layers}
        accuracy = top_acc
        for name in sorted(saving, key=lambda n: -saving[n]):
            cheaper = [b for b in range(lowest[name], bits[name])
                       if costs.of_layer(by_name[name], b, metric) < costs.of_layer(by_name[name], bits[name], metric)]
            for b in cheaper:
                trial = evaluate({**bits, name: b}, f"joint {name}")
                if trial >= floor:
                    bits[name], accuracy = b, trial
                    break
    else:
        accuracy = top_acc
        LOG.warning("mixed precision: all %d-bit accuracy %.4f is below the floor %.4f; keeping it",
                    max_bits, top_acc, floor)
    bar.close()
    plan = build_plan(layers, bits, {"method": "mixed_precision", "metric": metric, "bound_points": bound,
                                     "float_accuracy": float_acc, "validation_accuracy": accuracy,
                                     "validation_samples": int(len(y_val))})
    return SearchResult(bits=bits, plan=plan, float_accuracy=float_acc, accuracy=accuracy,
                        max_bits_accuracy=top_acc, bound_points=bound, met=top_acc >= floor, metric=metric,
                        cost=costs.total(bits, metric), max_bits_cost=top_cost,
                        evaluations=len(history), history=history)
