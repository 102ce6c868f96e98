"""MADDNESS's ridge refit of LUT tables (``lut_tvm.ridge``, ``planner.ridge_refit_tables``,
``build_kmeans_plan`` with ``refit_tables``, ``lut_tvm.train.ridge_refit``): checked against a NumPy
normal-equation solve, on sklearn's real digits (held-out layer-output error vs k-means tables), and
compiled (free tables carried by the plan) against the NumPy reference run with the compiled codes."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from small_models import CNN, assert_matches_reference, cnn_reference, seeded

import lut_tvm
from lut_tvm import reference as ref
from lut_tvm.errors import PlanError
from lut_tvm.plan import Plan
from lut_tvm.planner import refit_layer_tables, ridge_refit_tables
from lut_tvm.policy import PlanPolicy, TableRefit
from lut_tvm.ridge import one_hot_codes, ridge_tables, ridge_weight
from lut_tvm.testing import compile_with_codes
from lut_tvm.train import LutConfig, convert, export_plan, lut_layers, to_dense_model
from lut_tvm.train.convert import collect_rows
from lut_tvm.weights import LayerKind

pytestmark = [
    pytest.mark.filterwarnings("ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore:Renaming name:UserWarning"),
]
CALIBRATION = slice(0, 400)
HELD_OUT = slice(600, 900)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's real 8x8 digits in [0, 1], NCHW float32 [1797, 1, 8, 8]."""
    from sklearn.datasets import load_digits

    return (load_digits().images / 16.0).astype(np.float32)[:, None]


@pytest.fixture(scope="module")
def cnn():
    return seeded(CNN, 1)


@pytest.fixture(scope="module")
def kmeans_plan(cnn, digits):
    """The k-means plan (made on the torch side: the planner's own k-means is tested elsewhere)."""
    return export_plan(convert(cnn, LutConfig(policy=PlanPolicy(max_rows=2048)), digits[CALIBRATION]))


def _lookup_output(rows, centroids, tables) -> np.ndarray:
    """NumPy LUT output (no bias) of ``rows`` with real tables ``[C, K, N]`` quantized to INT8."""
    tables_q, scale = ref.quantize_tables(tables)
    return ref.lookup_accumulate(ref.encode(rows, centroids), tables_q).astype(np.float64) * scale


def test_ridge_tables_equal_the_normal_equation_solution():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(300, 12))
    centroids = rng.normal(size=(3, 8, 4)).astype(np.float32)
    target = rows @ rng.normal(size=(12, 5))
    fitted = ridge_tables(rows, centroids, target, 0.5)
    design = one_hot_codes(ref.encode(rows, centroids), 8).toarray()
    expected = np.linalg.solve(design.T @ design + 0.5 * np.eye(24), design.T @ target)
    np.testing.assert_allclose(fitted.reshape(24, 5), expected, rtol=1e-8, atol=1e-10)
    codes = ref.encode(rows, centroids)
    assert (design.sum(1) == 3).all() and (design[np.arange(300), 8 + codes[:, 1].astype(int)] == 1).all()
    decoded = centroids.astype(np.float64)[np.arange(3)[None], codes.astype(int)].reshape(300, 12)
    np.testing.assert_allclose(ridge_weight(rows, centroids, target, 0.5),
                               np.linalg.solve(decoded.T @ decoded + 0.5 * np.eye(12), decoded.T @ target),
                               rtol=1e-8, atol=1e-10)


def test_refit_tables_cut_the_held_out_output_error_on_real_digits(cnn, digits, kmeans_plan):
    tables = ridge_refit_tables(cnn, digits[CALIBRATION], kmeans_plan, ridge_lambda=1.0)
    assert list(tables) == [layer.name for layer in kmeans_plan.layers]
    modules = [cnn.get_submodule(layer.name) for layer in kmeans_plan.layers]  # held-out rows by torch hooks
    held_out = collect_rows(cnn, modules, digits[HELD_OUT], LutConfig(policy=PlanPolicy(max_rows=4096)))
    errors = {}
    for layer, module, rows in zip(kmeans_plan.layers, modules, held_out):
        weight = module.weight.detach().double().reshape(module.weight.shape[0], -1).T.numpy()
        exact = rows.astype(np.float64) @ weight
        assert tables[layer.name].shape == (*layer.centroids.shape[:2], weight.shape[1])
        kmeans_tables = ref.build_tables(layer.centroids, weight)
        errors[layer.name] = (np.linalg.norm(_lookup_output(rows, layer.centroids, tables[layer.name]) - exact),
                              np.linalg.norm(_lookup_output(rows, layer.centroids, kmeans_tables) - exact))
    assert all(ridge < kmeans for ridge, kmeans in errors.values()), errors
    assert np.mean([ridge / kmeans for ridge, kmeans in errors.values()]) < 0.9, errors


@pytest.fixture(scope="module")
def weight_refit(cnn, digits):
    policy = PlanPolicy(max_rows=2048, refit_tables="ridge_weight")
    return convert(cnn, LutConfig(policy=policy, calibration_samples=256), digits[CALIBRATION])


def test_refit_weight_compiles_and_runs_equal_to_the_numpy_reference(cnn, digits, weight_refit):
    plan = export_plan(weight_refit)
    dense = to_dense_model(weight_refit)
    x = digits[HELD_OUT][:48]
    compiled = lut_tvm.compile(dense, plan, example_inputs=(x,))
    assert compiled.info.lut_layers == ["conv2", "conv3", "fc1"]
    tapped = compile_with_codes(dense, plan, example_inputs=(x,))
    _, reference = assert_matches_reference(compiled(x), tapped, cnn_reference, dense, plan, x)
    assert reference.used == ["conv2", "conv3", "fc1"]
    for name, layer in lut_layers(weight_refit):  # the tables the plan compiles to are P.W', not P.W
        refit = layer.weight.detach().numpy()
        assert not np.allclose(refit, cnn.get_submodule(name).weight.detach().numpy(), atol=1e-3)


def test_free_tables_run_as_the_numpy_lookup_and_export_into_the_plan(cnn, digits, tmp_path):
    lut = convert(cnn, LutConfig(policy=PlanPolicy(max_rows=2048, only=["fc1"]), calibration_samples=256),
                  digits[CALIBRATION])
    layer = lut.fc1
    rng = np.random.default_rng(2)
    tables = rng.normal(size=(*layer.centroids.shape[:2], 32))
    layer.set_tables(tables)
    rows = rng.uniform(0, 2, size=(40, 256)).astype(np.float32)
    with torch.no_grad():
        got = layer.eval()(torch.from_numpy(rows)).numpy()
    centroids = layer.centroids.detach().numpy()
    expected = _lookup_output(rows, centroids, tables.astype(np.float32).astype(np.float64)) + layer.bias.detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    plan = Plan.load(export_plan(lut, tmp_path / "plan.npz").save(tmp_path / "plan.npz"))
    assert plan.layers[0].name == "fc1"
    np.testing.assert_array_equal(plan.layers[0].tables, tables.astype(np.float32))
    with pytest.raises(ValueError, match="not \\[C, K, N\\]"):
        copy.deepcopy(layer).set_tables(tables[:, :, :5])


def test_refit_layer_tables_ridge_weight_is_p_times_the_refit_weight():
    rng = np.random.default_rng(4)
    rows = rng.normal(size=(200, 8))
    centroids = rng.normal(size=(2, 16, 4)).astype(np.float32)
    site = SimpleNamespace(kind=LayerKind.DENSE, weight=rng.normal(size=(8, 6)).astype(np.float32))
    target = rows @ site.weight.astype(np.float64)
    got = refit_layer_tables("fc", site, centroids, rows, TableRefit.RIDGE_WEIGHT, 0.5)
    assert got.dtype == np.float32 and got.shape == (2, 16, 6)
    np.testing.assert_allclose(got, ref.build_tables(centroids, ridge_weight(rows, centroids, target, 0.5)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(refit_layer_tables("fc", site, centroids, rows, "ridge", 0.5),
                               ridge_tables(rows, centroids, target, 0.5), rtol=1e-5, atol=1e-6)
    with pytest.raises(PlanError, match="'fc'.*refits nothing"):
        refit_layer_tables("fc", site, centroids, rows, TableRefit.NONE, 0.5)


@pytest.fixture(scope="module")
def ridge_plan(cnn, digits):
    """A planner k-means plan with MADDNESS's free (ridge-refit) tables, made from the model itself."""
    return lut_tvm.build_kmeans_plan(cnn, digits[CALIBRATION], PlanPolicy(max_rows=2048, refit_tables="ridge"))


def test_ridge_plan_compiles_and_runs_equal_to_the_numpy_tables_reference(cnn, digits, ridge_plan, tmp_path):
    assert [layer.name for layer in ridge_plan.layers] == ["conv2", "conv3", "fc1"]
    assert ridge_plan.provenance["policy"]["refit_tables"] == "ridge"
    for layer in ridge_plan.layers:  # real free tables, not P.W
        weight = cnn.get_submodule(layer.name).weight.detach().numpy()
        assert layer.tables is not None and layer.tables.shape == (*layer.centroids.shape[:2], weight.shape[0])
        assert not np.allclose(layer.tables, ref.build_tables(layer.centroids, weight.reshape(len(weight), -1).T),
                               atol=1e-3)
    plan = Plan.load(ridge_plan.save(tmp_path / "ridge_plan.npz"))  # through the file (version 2)
    assert plan.layers[0].tables is not None
    x = digits[HELD_OUT][:48]
    compiled = lut_tvm.compile(cnn, tmp_path / "ridge_plan.npz", example_inputs=(x,))
    assert compiled.info.lut_layers == ["conv2", "conv3", "fc1"]
    tapped = compile_with_codes(cnn, tmp_path / "ridge_plan.npz", example_inputs=(x,))
    expected, reference = assert_matches_reference(compiled(x), tapped, cnn_reference, cnn, plan, x)
    assert reference.used == ["conv2", "conv3", "fc1"]
    # the comparison can tell the free tables from P.W
    kmeans_expected, _ = cnn_reference(cnn, plan, x, free_tables=False)
    assert np.abs(kmeans_expected - expected).max() > 1e-3


def test_ridge_weight_plan_carries_tables_of_the_form_p_times_a_refit_weight(cnn, digits, ridge_plan):
    """``ridge_weight`` cannot put W' in the plan (the compiler binds the model's weight): the plan
    carries the tables P.W' instead, so each codebook's [K, N] table has rank <= V."""
    plan = lut_tvm.build_kmeans_plan(cnn, digits[CALIBRATION],
                                     PlanPolicy(max_rows=2048, refit_tables="ridge_weight"))
    assert [layer.name for layer in plan.layers] == ["conv2", "conv3", "fc1"]
    for layer, free in zip(plan.layers, ridge_plan.layers):
        np.testing.assert_array_equal(layer.centroids, free.centroids)  # same seeded k-means
        weight = cnn.get_submodule(layer.name).weight.detach().numpy()
        weight_dn = weight.reshape(len(weight), -1).T
        assert layer.tables.shape == free.tables.shape
        assert not np.allclose(layer.tables, ref.build_tables(layer.centroids, weight_dn), atol=1e-3)
        sub_len, (num_centroids, out) = layer.sub_vector_len, layer.tables.shape[1:]
        if sub_len < min(num_centroids, out):  # conv2 (V = 9) and conv3 (V = 4): rank-limited
            ranks = [np.linalg.matrix_rank(t.astype(np.float64), tol=1e-4 * np.abs(t).max()) for t in layer.tables]
            free_ranks = [np.linalg.matrix_rank(t.astype(np.float64), tol=1e-4 * np.abs(t).max())
                          for t in free.tables]
            assert max(ranks) <= sub_len < max(free_ranks), (layer.name, ranks, free_ranks)


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf"), "1", None, True])
def test_bad_ridge_lambda_is_rejected(bad, cnn, digits, kmeans_plan):
    with pytest.raises(PlanError, match="ridge_lambda"):
        PlanPolicy(refit_tables="ridge", ridge_lambda=bad)
    with pytest.raises(PlanError, match="ridge_lambda"):
        ridge_tables(np.ones((20, 4)), np.ones((1, 4, 4), np.float32), np.ones((20, 2)), bad)
    with pytest.raises(PlanError, match="ridge_lambda"):
        ridge_refit_tables(cnn, digits[:64], kmeans_plan, ridge_lambda=bad)


def test_refit_policy_round_trips():
    policy = PlanPolicy(refit_tables="ridge_weight", ridge_lambda=3)
    assert policy.refit_tables is TableRefit.RIDGE_WEIGHT and policy.ridge_lambda == 3.0
    assert PlanPolicy.from_dict(policy.to_dict()) == policy
    assert policy.to_dict()["refit_tables"] == "ridge_weight"
    with pytest.raises(PlanError, match="refit_tables = 'lasso', not one of"):
        PlanPolicy(refit_tables="lasso")
