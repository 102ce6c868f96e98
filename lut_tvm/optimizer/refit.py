"""Training for imported models: each LUT layer's tables refit by ridge regression (MADDNESS) so that its
output matches the original layer's, layer by layer in model order on the inputs the LUT model itself
feeds the layer (so each refit makes up for the LUT layers before it), and the search extended with the
budget the refit frees."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from tqdm.auto import tqdm

from ..compiler import layer_sites
from ..errors import LutTvmError
from ..plan import Plan
from ..planner import collect_layer_rows, refit_layer_tables
from ..policy import TableRefit
from .evaluate import run_batched

LOG = logging.getLogger("lut_tvm")

RIDGE_LAMBDA = 1.0


def can_refit(site) -> bool:
    """Whether a layer's tables can be refit (``planner.refit_layer_tables``: not a grouped conv)."""
    return getattr(site, "groups", 1) == 1


def _sampled(rows: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """At most ``max_rows`` of ``rows``, picked by ``seed`` alone: two arrays of as many rows (one
    layer's inputs in the original and in the LUT model) keep the same samples, row for row."""
    if len(rows) <= max_rows:
        return rows
    return rows[np.random.default_rng(seed).choice(len(rows), max_rows, replace=False)]


def compounding_refit(imported, plan: Plan, calibration: np.ndarray, *, max_rows: int = 4096, seed: int = 0,
                      ridge_lambda: float = RIDGE_LAMBDA, start: str | None = None, original_rows=None) -> Plan:
    """``plan`` with each layer's tables refit (``LayerPlan.tables``) in model order: the codes of the
    inputs that the model, with the plan's earlier layers as LUTs (already refit), feeds the layer on
    ``calibration``; the target the original layer's outputs (no bias) on the same samples. Grouped
    convs keep their tables. ``start``: layers before this one keep theirs (an extension of a refit
    plan). ``original_rows``: ``{fingerprint: rows}`` of the original model, reused between calls."""
    order = [site.fingerprint for site in layer_sites(imported)]
    sites = {site.fingerprint: site for site in layer_sites(imported)}
    missing = [layer.name for layer in plan.layers if layer.weight_fingerprint not in sites]
    if missing:
        raise LutTvmError(f"optimize: plan layer(s) {missing} match no weight of {imported.source}")
    layers = sorted(plan.layers, key=lambda l: order.index(l.weight_fingerprint))
    first = 0 if start is None else [l.name for l in layers].index(start)
    original_rows = {} if original_rows is None else original_rows
    needed = [sites[l.weight_fingerprint] for l in layers[first:]
              if can_refit(sites[l.weight_fingerprint]) and l.weight_fingerprint not in original_rows]
    if needed:
        for site, rows in zip(needed, collect_layer_rows(imported, calibration, needed, max_rows, None)):
            original_rows[site.fingerprint] = _sampled(rows, max_rows, seed)
    for index in tqdm(range(first, len(layers)), desc="refit", unit="layer", leave=False, disable=None):
        layer = layers[index]
        site = sites[layer.weight_fingerprint]
        if not can_refit(site):
            continue
        earlier = Plan(layers[:index])
        rows = original_rows[site.fingerprint] if not earlier.layers else _sampled(
            collect_layer_rows(imported, calibration, [site], max_rows, None, plan=earlier)[0], max_rows, seed)
        tables = refit_layer_tables(layer.name, site, layer.centroids, rows, TableRefit.RIDGE, ridge_lambda,
                                    target_rows=original_rows[site.fingerprint])
        layers[index] = dataclasses.replace(layer, tables=tables)
    return Plan(layers, provenance=dict(plan.provenance))


@dataclasses.dataclass
class RefitOutcome:
    """What the refit step did: the plan (refit, extended) and its compiled model and loss on the eval
    data, and for the report the loss before and after the refit and the layers added after it."""

    choice: dict
    plan: Plan | None
    compiled: object
    loss: float
    report: dict


def refit_and_extend(ctx, choice: dict, compiled, loss: float, candidates, budget: float,
                     prune: bool = False) -> RefitOutcome:
    """The chosen plan refit with compounding (``compounding_refit``) and verified on the eval data
    (kept if it loses no more than the plan as chosen), then extended greedily with the candidates
    left, by saving per point lost alone, each refit from its layer on and verified end to end.
    ``ctx``: ``(imported, bank, compiled evaluator, metrics, calibration, max_rows, seed)``."""
    imported, bank, compiled_eval, metrics, calibration, max_rows, seed = ctx
    original_rows: dict = {}

    def measure(plan):
        model = compiled_eval.compiled(plan)
        return model, metrics.original - metrics.of_outputs(run_batched(model, compiled_eval.x, compiled_eval.batch))

    report = {"method": "ridge", "loss_before": loss, "loss_after": None, "kept": False, "extended": []}
    if not choice:
        return RefitOutcome(choice, None, compiled, loss, report)
    refit_plan = compounding_refit(imported, bank.plan(choice), calibration, max_rows=max_rows, seed=seed,
                                   original_rows=original_rows)
    refit_model, refit_loss = measure(refit_plan)
    report["loss_after"] = refit_loss
    LOG.info("optimize: refit of the chosen plan: loss %.3f -> %.3f points", loss, refit_loss)
    if refit_loss > loss:
        return RefitOutcome(choice, None, compiled, loss, report)
    report["kept"] = True
    choice, plan, compiled, loss = dict(choice), refit_plan, refit_model, refit_loss
    saved = {c.layer: c.saving_ms for c in candidates if choice.get(c.layer) == c.sub_len and c.layer in choice}
    left = sorted((c for c in candidates if c.saving_ms > 0 and c.status != "chosen" and c.loss_alone <= budget),
                  key=lambda c: (-c.score, -c.saving_ms, c.layer, c.sub_len))
    for cand in tqdm(left, desc="extend", unit="plan", leave=False, disable=None):
        if saved.get(cand.layer, 0.0) >= cand.saving_ms or (prune and cand.loss_alone > budget - loss):
            continue
        trial = {**choice, cand.layer: cand.sub_len}
        layers = [l for l in plan.layers if l.name != cand.layer] + [bank.layer_plan(_layer(bank, cand.layer),
                                                                                     cand.sub_len)]
        trial_plan = compounding_refit(imported, Plan(layers), calibration, max_rows=max_rows, seed=seed,
                                       start=cand.layer, original_rows=original_rows)
        trial_model, trial_loss = measure(trial_plan)
        cand.loss_with_plan = trial_loss
        report["extended"].append({"tried": f"{cand.layer} V={cand.sub_len}", "loss": trial_loss,
                                   "accepted": trial_loss <= budget})
        if trial_loss > budget:
            continue
        for other in candidates:
            if other.layer == cand.layer and other.status == "chosen":
                other.status = "replaced by a faster V (after the refit)"
        cand.status = "chosen"
        choice, plan, compiled, loss, saved[cand.layer] = trial, trial_plan, trial_model, trial_loss, cand.saving_ms
    report["loss_final"] = loss
    return RefitOutcome(choice, plan, compiled, loss, report)


def _layer(bank, name: str):
    return next(layer for layer in bank.layers if layer.name == name)
