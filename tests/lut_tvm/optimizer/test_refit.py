"""optimize's table training for imported models (``optimizer.refit``) on the digits MLP: the compounding
refit's tables equal a NumPy ridge solve on the tapped rows of the LUT model, its per-layer output error is
not larger than the k-means plan's, and optimize with the refit meets the budget on the eval data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from optimizer_settings import FAST

import lut_tvm
from lut_tvm import reference as ref
from lut_tvm.compiler import layer_sites
from lut_tvm.errors import LutTvmError
from lut_tvm.frontends import import_model
from lut_tvm.plan import Plan
from lut_tvm.planner import build_kmeans_plan, collect_layer_rows
from lut_tvm.policy import PlanPolicy
from lut_tvm.optimizer.refit import RIDGE_LAMBDA, compounding_refit

BATCH = 64
SAMPLES = 10 * BATCH  # whole batches: every calibration row is tapped, none sampled away
BUDGET = 1.5


@pytest.fixture(scope="module")
def refit_case(mlp_case):
    """``(imported, calibration, weights {name: (W [D, N], b)}, k-means plan, refit plan)``: fc1 and fc2
    at V = 4 (fc3 stays dense)."""
    model, calibration, _, _ = mlp_case
    calibration = calibration[:SAMPLES]
    imported = import_model(model, (calibration[:BATCH],))
    policy = PlanPolicy(only=["fc1", "fc2"], sub_len_overrides={"fc1": 4, "fc2": 4}, skip_first_conv=False,
                        skip_last_dense=False, max_rows=SAMPLES)
    kmeans = build_kmeans_plan(imported, calibration, policy)
    refit = compounding_refit(imported, kmeans, calibration, max_rows=10 * SAMPLES)
    weights = {name: (getattr(model, name).weight.detach().numpy().T.astype(np.float64),
                      getattr(model, name).bias.detach().numpy()) for name in ("fc1", "fc2", "fc3")}
    return imported, calibration, weights, kmeans, refit


def _original_inputs(calibration, weights) -> dict[str, np.ndarray]:
    """Each layer's input in the original model, computed here in NumPy (float64)."""
    first = calibration.astype(np.float64)
    second = np.maximum(first @ weights["fc1"][0] + weights["fc1"][1], 0)
    return {"fc1": first, "fc2": second}


def _ridge_solve(rows, centroids, target) -> np.ndarray:
    """NumPy's solve of the ridge normal equations on the dense one-hot codes: tables [C, K, N]."""
    num_codebooks, num_centroids, _ = centroids.shape
    codes = ref.encode(rows, centroids)
    one_hot = np.zeros((len(rows), num_codebooks * num_centroids))
    one_hot[np.arange(len(rows))[:, None], np.arange(num_codebooks) * num_centroids + codes] = 1
    gram = one_hot.T @ one_hot + RIDGE_LAMBDA * np.eye(one_hot.shape[1])
    return np.linalg.solve(gram, one_hot.T @ target).reshape(num_codebooks, num_centroids, -1)


def _tapped(imported, calibration, plan, name) -> np.ndarray:
    """The rows the model with ``plan``'s layers before ``name`` as LUTs feeds layer ``name``."""
    sites = {layer.name: layer for layer in plan.layers}
    earlier = Plan(plan.layers[: [l.name for l in plan.layers].index(name)])
    site = next(s for s in layer_sites(imported) if s.fingerprint == sites[name].weight_fingerprint)
    return collect_layer_rows(imported, calibration, [site], 10 * SAMPLES, None, plan=earlier)[0]


def test_refit_tables_equal_a_numpy_ridge_solve_on_the_tapped_rows(refit_case):
    imported, calibration, weights, _, refit = refit_case
    assert [layer.name for layer in refit.layers] == ["fc1", "fc2"]
    original = _original_inputs(calibration, weights)
    fc1 = refit.layers[0]
    # the LUT model's input of fc2, tapped, against NumPy's LUT fc1 (codes may differ on encode near-ties)
    tapped = _tapped(imported, calibration, refit, "fc2")
    lut_fc1 = ref.lut_output(ref.encode(calibration, fc1.centroids), fc1.centroids, weights["fc1"][0],
                             weights["fc1"][1], fc1.table_quant.granularity, tables=fc1.tables)
    close = np.isclose(tapped, np.maximum(lut_fc1, 0), rtol=1e-4, atol=1e-4).all(axis=1)
    assert close.mean() > 0.98
    assert not np.allclose(tapped, original["fc2"], atol=1e-3)  # fc1's LUT changed what fc2 sees
    for layer, rows in ((fc1, calibration), (refit.layers[1], tapped)):
        target = original[layer.name] @ weights[layer.name][0]
        expected = _ridge_solve(rows.astype(np.float64), layer.centroids, target)
        np.testing.assert_allclose(layer.tables, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_refit_plan_loses_less_per_layer_than_the_kmeans_plan(refit_case):
    imported, calibration, weights, kmeans, refit = refit_case
    original = _original_inputs(calibration, weights)
    for index, name in enumerate(["fc1", "fc2"]):
        target = original[name] @ weights[name][0]
        errors = {}
        for label, plan in (("kmeans", kmeans), ("refit", refit)):
            layer = plan.layers[index]
            rows = _tapped(imported, calibration, plan, name)
            real = ref.build_tables(layer.centroids, weights[name][0]) if layer.tables is None else layer.tables
            codes = ref.encode(rows, layer.centroids)
            out = real[np.arange(real.shape[0])[None, :], codes].sum(axis=1)
            errors[label] = float(np.linalg.norm(out - target) / np.linalg.norm(target))
        assert errors["refit"] <= errors["kmeans"], (name, errors)
        assert errors["refit"] < 0.9 * errors["kmeans"], (name, errors)  # a real gain, not a tie


def test_optimize_with_refit_meets_the_budget_on_eval_data(mlp_case, tmp_path):
    model, calibration, x, y = mlp_case
    result = lut_tvm.optimize(model, calibration, x, y, budget=BUDGET, cache_dir=tmp_path, evaluator="compiled",
                              refit="ridge", peers=False, **FAST)
    refit = result.report["refit"]
    assert refit["method"] == "ridge" and result.plan.provenance["refit"] == "ridge"
    assert result.choice
    compiled = lut_tvm.compile(model, result.plan, example_inputs=(x[:BATCH],), tuning_logs=False)
    usable = len(x) - len(x) % BATCH
    outputs = np.concatenate([compiled(x[i : i + BATCH]) for i in range(0, usable, BATCH)])
    accuracy = float((outputs.argmax(-1) == y[:usable]).mean() * 100)
    with torch.no_grad():
        original = float((model(torch.from_numpy(x[:usable])).numpy().argmax(-1) == y[:usable]).mean() * 100)
    assert original - accuracy <= BUDGET + 100 / usable  # the last partial batch left out here
    assert result.report["original_metric"] - result.report["chosen_metric_compiled"] <= BUDGET
    # a layer's compounding refit is kept only if it lowers the loss plus its margin
    assert refit["loss_with_margin_after"] <= refit["loss_with_margin_before"]
    assert refit["kept"] == bool(refit["refit_layers"])
    refit_layers = [layer for layer in result.plan.layers if layer.name in refit["refit_layers"]]
    assert all(layer.tables is not None for layer in refit_layers)


def test_optimize_refuses_an_unknown_refit(mlp_case):
    model, calibration, x, y = mlp_case
    with pytest.raises(LutTvmError, match="refit 'lsq' is not one of"):
        lut_tvm.optimize(model, calibration, x, y, refit="lsq")


def test_refit_report_of_a_plan_dropped_for_dense_says_so(mlp_case, tmp_path, monkeypatch):
    """When the refit plan then measures slower than dense, the plan written is all dense: the refit section
    must not read as if its layers were in it."""
    from lut_tvm.optimizer import api
    from lut_tvm.optimizer.report import render_markdown

    model, calibration, x, y = mlp_case
    monkeypatch.setattr(api, "_re_timed_or_dense", lambda choice, *args: (not choice, 2.0, 1.0))
    result = lut_tvm.optimize(model, calibration, x, y, budget=BUDGET, cache_dir=tmp_path, evaluator="compiled",
                              refit="ridge", peers=False, **FAST)
    refit = result.report["refit"]
    assert result.choice == {} and result.plan.layers == [] and result.report["slower_than_dense"]
    assert refit["loss_after"] is not None and refit["dropped"] == api.DROPPED_FOR_DENSE
    assert "This refit plan was then dropped" in render_markdown(result.report)
