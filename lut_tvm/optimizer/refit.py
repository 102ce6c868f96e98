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
from .layers import is_int8, option_label

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
                      ridge_lambda: float = RIDGE_LAMBDA, start: str | None = None, only=None,
                      original_rows=None) -> Plan:
    """``plan`` with each layer's tables refit (``LayerPlan.tables``) in model order: the codes of the
    inputs that the model, with the plan's earlier layers as LUTs (already refit), feeds the layer on
    ``calibration``; the target the original layer's outputs (no bias) on the same samples. Grouped
    convs keep their tables. ``start``: layers before this one keep theirs (an extension of a refit
    plan); ``only``: refit just these layer names (the others keep their tables). ``original_rows``:
    ``{fingerprint: rows}`` of the original model, reused between calls."""
    order = [site.fingerprint for site in layer_sites(imported)]
    sites = {site.fingerprint: site for site in layer_sites(imported)}
    missing = [layer.name for layer in plan.layers if layer.weight_fingerprint not in sites]
    if missing:
        raise LutTvmError(f"optimize: plan layer(s) {missing} match no weight of {imported.source}")
    layers = sorted(plan.layers, key=lambda l: order.index(l.weight_fingerprint))
    first = 0 if start is None else [l.name for l in layers].index(start)
    wanted = [index for index in range(first, len(layers)) if not layers[index].is_int8
              and can_refit(sites[layers[index].weight_fingerprint]) and (only is None or layers[index].name in only)]
    original_rows = {} if original_rows is None else original_rows
    needed = [sites[layers[i].weight_fingerprint] for i in wanted
              if layers[i].weight_fingerprint not in original_rows]
    if needed:
        for site, rows in zip(needed, collect_layer_rows(imported, calibration, needed, max_rows, None)):
            original_rows[site.fingerprint] = _sampled(rows, max_rows, seed)
    for index in tqdm(wanted, desc="refit", unit="layer", leave=False, disable=None):
        layer = layers[index]
        site = sites[layer.weight_fingerprint]
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
    """The chosen plan refit with compounding, layer by layer in model order (``compounding_refit`` of
    one layer on the inputs of the plan as refit so far), each layer's refit kept only if the plan's loss
    on the eval data plus its margin (``evaluate.loss_margin``) then falls; then, if a refit was kept,
    extended greedily with the candidates left, by saving per point lost alone, each with its search tables
    or else refit with compounding, each verified end to end (loss plus margin within the budget). ``ctx``: ``(imported, bank, compiled evaluator, metrics, calibration, max_rows,
    seed)``."""
    imported, bank, compiled_eval, metrics, calibration, max_rows, seed = ctx
    original_rows: dict = {}

    def measure(plan, model=None):
        """``(compiled model, loss, loss + margin)`` of ``plan`` on the eval data (``model``: already compiled)."""
        model = compiled_eval.compiled(plan) if model is None else model
        outputs = run_batched(model, compiled_eval.x, compiled_eval.batch)
        loss = metrics.original - metrics.of_outputs(outputs)
        return model, loss, loss + metrics.margin_of_outputs(outputs)

    def refit(plan, names):
        return compounding_refit(imported, plan, calibration, max_rows=max_rows, seed=seed, start=names[0],
                                 only=set(names), original_rows=original_rows)

    report = {"method": "ridge", "loss_before": loss, "loss_after": None, "kept": False, "refit_layers": [],
              "extended": []}
    if not choice:
        return RefitOutcome(choice, None, compiled, loss, report)
    plan = compounding_refit(imported, bank.plan(choice), calibration, only=set(), original_rows=original_rows)
    guarded = report["loss_with_margin_before"] = measure(plan, compiled)[2]
    for layer in plan.layers:  # model order
        if layer.is_int8 or not can_refit(_layer(bank, layer.name).site):
            continue
        trial = refit(plan, [layer.name])
        trial_model, trial_loss, trial_guarded = measure(trial)
        LOG.info("optimize: compounding refit of %s: plan loss %.3f -> %.3f points (with margin %.3f -> %.3f)",
                 layer.name, loss, trial_loss, guarded, trial_guarded)
        if trial_guarded < guarded:
            plan, compiled, loss, guarded = trial, trial_model, trial_loss, trial_guarded
            report["refit_layers"].append(layer.name)
    report["loss_after"], report["loss_with_margin_after"], report["kept"] = loss, guarded, bool(report["refit_layers"])
    if not report["kept"]:
        return RefitOutcome(choice, None, compiled, loss, report)
    choice = dict(choice)
    saved = {c.layer: c.saving_ms for c in candidates if c.layer in choice and choice[c.layer] == c.sub_len}
    left = sorted((c for c in candidates if c.saving_ms > 0 and c.status != "chosen" and c.loss_alone <= budget),
                  key=lambda c: (-c.score, -c.saving_ms, c.layer, c.sub_len))
    for cand in tqdm(left, desc="extend", unit="plan", leave=False, disable=None):
        if saved.get(cand.layer, 0.0) >= cand.saving_ms or (prune and cand.loss_alone > budget - guarded):
            continue
        layers = [l for l in plan.layers if l.name != cand.layer]
        trial_plan = Plan(layers + [bank.layer_plan(_layer(bank, cand.layer), cand.sub_len)])
        trial_model, trial_loss, trial_guarded = measure(trial_plan)
        if trial_guarded > budget and not is_int8(cand.sub_len) and can_refit(_layer(bank, cand.layer).site):
            trial_plan = refit(trial_plan, [cand.layer])
            trial_model, trial_loss, trial_guarded = measure(trial_plan)
        cand.loss_with_plan = trial_guarded
        report["extended"].append({"tried": f"{cand.layer} {option_label(cand.sub_len)}", "loss": trial_loss,
                                   "loss_with_margin": trial_guarded, "accepted": trial_guarded <= budget})
        if trial_guarded > budget:
            continue
        for other in candidates:
            if other.layer == cand.layer and other.status == "chosen":
                other.status = "replaced by a faster V (after the refit)"
        cand.status = "chosen"
        choice[cand.layer], saved[cand.layer] = cand.sub_len, cand.saving_ms
        plan, compiled, loss, guarded = trial_plan, trial_model, trial_loss, trial_guarded
    report["loss_final"] = loss
    return RefitOutcome(choice, plan, compiled, loss, report)


def _layer(bank, name: str):
    return next(layer for layer in bank.layers if layer.name == name)
