"""The held-back check: the eval split (seeded, stratified, disjoint), bad fractions refused, the final plan
backed off on held-back samples until it holds the budget there (losses recomputed here from the compiled
models' outputs with NumPy), and optimize's report of it."""

from __future__ import annotations

import numpy as np
import pytest
from optimizer_settings import FAST

import lut_tvm
from lut_tvm.errors import LutTvmError
from lut_tvm.frontends import import_model
from lut_tvm.optimizer.holdback import HELD_BACK_STANDARD_ERRORS, HeldBackCheck, split_eval
from lut_tvm.optimizer import inputs
from lut_tvm.optimizer.inputs import MIN_HELD_BACK, check_verify_fraction
from lut_tvm.policy import PlanPolicy
from lut_tvm.targets import resolve_target

BATCH = 32


def test_split_is_seeded_disjoint_and_stratified():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1000, 5)).astype(np.float32)
    x[:, 0] = np.arange(1000)  # each sample identifiable
    y = np.repeat(np.arange(4), [100, 200, 300, 400])
    split = split_eval(x, y, 0.3, seed=7)
    assert len(split.held_x) == 300 and len(split.search_x) == 700 and split.note is None
    ids = np.concatenate([split.search_x[:, 0], split.held_x[:, 0]])
    assert sorted(ids.tolist()) == list(range(1000))  # every sample once
    assert (y[split.held_x[:, 0].astype(int)] == split.held_y).all()
    assert np.bincount(split.held_y).tolist() == [30, 60, 90, 120]  # class shares kept
    again = split_eval(x, y, 0.3, seed=7)
    assert (again.held_x == split.held_x).all()
    assert not (split_eval(x, y, 0.3, seed=8).held_x[:, 0] == split.held_x[:, 0]).all()


def test_split_without_labels_and_when_too_small():
    x = np.zeros((2 * MIN_HELD_BACK, 3), np.float32)
    cosine = split_eval(x, None, 0.5, seed=0)
    assert len(cosine.held_x) == MIN_HELD_BACK and cosine.held_y is None and cosine.search_y is None
    small = split_eval(x[: MIN_HELD_BACK + 20], None, 0.3, seed=0)
    assert small.held_x is None and len(small.search_x) == MIN_HELD_BACK + 20
    assert "no evaluation data held back" in small.note and "samples" in small.note
    assert split_eval(x, None, 0.0, seed=0).note is None


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_fraction_is_refused(fraction):
    with pytest.raises(LutTvmError, match="verify fraction"):
        check_verify_fraction(fraction)


def _loss_on(model, plan, x, y, batch):
    """Accuracy points ``plan`` loses against the dense compiled model on ``x`` (whole batches), with NumPy."""
    usable = len(x) - len(x) % batch

    def accuracy(p):
        compiled = lut_tvm.compile(model, p, example_inputs=(x[:batch],), tuning_logs=False)
        out = np.concatenate([np.asarray(compiled(x[i : i + batch])) for i in range(0, usable, batch)])
        return (out.argmax(-1) == y[:usable]).mean() * 100

    return accuracy(None) - accuracy(plan)


def test_backs_off_in_the_given_order_until_the_budget_holds(mlp_case):
    model, calibration, x, y = mlp_case
    usable = len(x) - len(x) % BATCH
    x, y = x[:usable], y[:usable]
    policy = PlanPolicy(dense_sub_len=32, skip_last_dense=False, max_rows=1024)
    plan = lut_tvm.build_kmeans_plan(model, calibration, policy, example_inputs=(calibration[:BATCH],))
    names = [layer.name for layer in plan.layers]
    assert len(names) == 3
    imported = import_model(model, (calibration[:BATCH],))
    check = HeldBackCheck(imported, x, y, "accuracy", resolve_target("native"), BATCH)

    loose = check.verify(imported, plan, budget=100.0, drop_order=lambda n: n)
    assert loose.backed_off == [] and len(loose.plan.layers) == 3
    assert loose.loss == pytest.approx(_loss_on(model, plan, x, y, BATCH), abs=1e-9)
    assert loose.samples == len(x)

    order = list(reversed(names))  # last layer given back first
    tight = check.verify(imported, plan, budget=-1.0, drop_order=lambda left: [n for n in order if n in left])
    assert tight.backed_off == order and tight.plan.layers == []  # no plan holds a negative budget
    assert [t["layers"] for t in tight.tried] == [names, names[:2], names[:1], []]
    assert tight.loss == 0.0

    first = tight.tried[0]["loss"] + HELD_BACK_STANDARD_ERRORS * tight.tried[0]["standard_error"]
    middle = check.verify(imported, plan, budget=first - 1e-6, drop_order=lambda left: [n for n in order if n in left])
    assert middle.backed_off[:1] == [order[0]]  # over the budget by a hair: one layer given back at least
    assert middle.loss + HELD_BACK_STANDARD_ERRORS * middle.standard_error <= first - 1e-6 or not middle.plan.layers
    kept = [layer.name for layer in middle.plan.layers]
    assert middle.loss == pytest.approx(_loss_on(model, middle.plan if kept else None, x, y, BATCH), abs=1e-9)


def test_optimize_reports_the_held_back_check(mlp_case, tmp_path, monkeypatch):
    model, calibration, x, y = mlp_case
    monkeypatch.setattr(inputs, "MIN_HELD_BACK", 100)  # the test's eval data is small: hold back ~110 samples
    result = lut_tvm.optimize(model, calibration, x, y, budget=2.5, cache_dir=tmp_path, peers=False,
                              verify_fraction=0.3, **FAST)
    held = result.report["held_back"]
    assert result.report["eval_samples"] + held["samples"] == len(x)
    assert held["samples"] == round(0.3 * len(x))
    if result.plan.layers:
        assert held["loss"] + HELD_BACK_STANDARD_ERRORS * held["standard_error"] <= 2.5
    none = lut_tvm.optimize(model, calibration, x, y, budget=2.5, cache_dir=tmp_path, peers=False,
                            verify_fraction=0.0, **FAST)
    assert none.report["eval_samples"] == len(x) and none.report["held_back"]["samples"] == 0
