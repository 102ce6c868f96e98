"""The accuracy benchmark's optimize rows: issue 13's goal judgment, the plan summary, the validation
split, and the rows carried over from a previous result when only some method groups run."""

import numpy as np
import pytest

from benchmarks.accuracy.optimize_method import plan_counts, plan_layers, validation_split
from benchmarks.accuracy.optimize_report import optimize_goals
from benchmarks.accuracy.run import carry_rows


def _plan(*choices):
    return [{"layer": f"l{i}", "shape": "conv", "choice": c} for i, c in enumerate(choices)]


def _result(acc=0.92, original=0.93, plan=None, ms=None, cpu=300.0, conv1d=None, compiled_layers=None, **extra):
    plan = plan if plan is not None else _plan("dense", "V=3", "int8")
    ms = ms if ms is not None else {"tvm_dense": 1.0, "lut optimize": 0.5, "ort_fp32": 0.8, "ort_int8": 0.6}
    counted = plan_counts(plan)
    row = {"acc": acc, "seconds": cpu * 3, "cpu_seconds": cpu,
           "compiled": {"lut_layers": counted["lut"] + counted["int8"] if compiled_layers is None else compiled_layers},
           "optimize": {"plan": plan, "model_layers": [p["layer"] for p in plan], "conv1d_layers": conv1d or [],
                        **extra},
           "speed": {"ms": ms, "batch": 50, "threads": 1}}
    return {"metric": "acc", "methods": {"original": {"acc": original}, "optimize": row}}


def _by_goal(result):
    return {g["goal"]: g for g in optimize_goals(result)}


def test_accuracy_goal_is_judged_on_points_with_float_noise_forgiven():
    assert _by_goal(_result(acc=0.973, original=0.983))["accuracy"]["met"]  # 1.0000000000000009 points
    assert not _by_goal(_result(acc=0.972, original=0.983))["accuracy"]["met"]
    assert _by_goal(_result(acc=0.99, original=0.983))["accuracy"]["met"]  # better than the original


def test_accuracy_goal_needs_every_layer_considered():
    result = _result()
    result["methods"]["optimize"]["optimize"]["model_layers"].append("first_conv")
    goal = _by_goal(result)["accuracy"]
    assert not goal["met"] and "first_conv" in goal["text"]


def test_latency_goal_needs_both_onnx_runtime_figures_and_gives_ratios():
    goal = _by_goal(_result())["latency"]
    assert goal["met"] and "1.60x" in goal["text"] and "1.20x" in goal["text"]  # 0.8 / 0.5, 0.6 / 0.5
    missing = _by_goal(_result(ms={"tvm_dense": 1.0, "lut optimize": 0.5, "ort_fp32": 0.8}))["latency"]
    assert not missing["met"] and "int8 (dynamic) not timed" in missing["text"]


def test_an_all_dense_plan_is_timed_as_dense_tvm():
    goal = _by_goal(_result(plan=_plan("dense", "dense"), ms={"tvm_dense": 1.0, "ort_fp32": 0.5, "ort_int8": 0.25}))
    assert goal["latency"]["met"] and "plan 1.000 ms" in goal["latency"]["text"]


def test_time_goal_is_judged_on_cpu_seconds():
    assert _by_goal(_result(cpu=900.0))["time"]["met"]
    assert not _by_goal(_result(cpu=901.0))["time"]["met"]


def test_conv1d_goal_only_for_models_with_conv1d_and_needs_one_as_a_lut():
    assert "conv1d" not in _by_goal(_result())
    assert _by_goal(_result(conv1d=["l1"]))["conv1d"]["met"]
    assert not _by_goal(_result(conv1d=["l0"]))["conv1d"]["met"]  # l0 stayed dense
    assert not _by_goal(_result(conv1d=["l1"], compiled_layers=1))["conv1d"]["met"]  # int8 layer not bound


def test_no_goals_without_an_optimize_row():
    assert optimize_goals({"metric": "acc", "methods": {"original": {"acc": 0.9}}}) == []


def test_plan_layers_names_each_choice():
    report = {"layers": [
        {"layer": "a", "shape": "s", "int8": False, "chosen_V": None},
        {"layer": "b", "shape": "s", "int8": True, "chosen_V": None},
        {"layer": "c", "shape": "s", "int8": False, "chosen_V": 9, "chosen_K": 16},
        {"layer": "d", "shape": "s", "int8": False, "chosen_V": 4, "chosen_K": 32}]}
    assert [row["choice"] for row in plan_layers(report)] == ["dense", "int8", "V=9", "V=4 K=32"]


def test_validation_split_is_disjoint_stratified_and_seeded():
    x = np.arange(200, dtype=np.float32)[:, None]
    y = np.repeat(np.arange(4), 50)
    x_fit, y_fit, x_val, y_val = validation_split(x, y, 0.2, seed=3)
    assert len(x_val) == 40 and np.bincount(y_val).tolist() == [10] * 4
    assert not set(x_fit[:, 0]) & set(x_val[:, 0])
    assert np.array_equal(validation_split(x, y, 0.2, seed=3)[2], x_val)


def test_carry_rows_keeps_computed_rows_and_marks_carried_ones():
    previous = {"metric": "acc", "environment": {"date": "2026-11-22"}, "lut_layers": [{"V": 3}],
                "methods": {"original": {"acc": 0.9}, "kmeans": {"acc": 0.7}, "optimize": {"acc": 0.1}}}
    result = {"metric": "acc", "lut_layers": None, "methods": {"original": {"acc": 0.91}, "optimize": {"acc": 0.9}}}
    merged = carry_rows(result, previous)
    assert merged["methods"]["optimize"] == {"acc": 0.9} and merged["methods"]["original"] == {"acc": 0.91}
    assert merged["methods"]["kmeans"]["carried_from"] == "2026-11-22"
    assert merged["methods"]["kmeans"]["carried_original"] == pytest.approx(0.9)
    assert merged["lut_layers"] == [{"V": 3}]
    assert carry_rows(result, None) is result


def test_conv1d_goal_says_why_no_conv1d_layer_was_chosen():
    candidates = [{"layer": "l0", "sub_len": 3, "saving_ms": 0.1, "loss_alone": 2.5, "status": "over budget alone",
                   "tables": "ridge"},
                  {"layer": "l0", "sub_len": 4, "saving_ms": 0.1, "loss_alone": 4.0, "status": "over budget alone",
                   "tables": "kmeans"},
                  {"layer": "l0", "sub_len": 8, "saving_ms": -0.1, "loss_alone": None, "status": "slower",
                   "tables": "kmeans"}]
    goal = _by_goal(_result(conv1d=["l0"], candidates=candidates))["conv1d"]
    assert not goal["met"]
    assert "1 of 3 of their LUT candidates predicted no faster" in goal["text"]
    assert "2.50 points, layer l0 V=3 (ridge tables)" in goal["text"]


def test_time_goal_is_not_judged_on_a_warm_cache():
    goal = _by_goal(_result(cpu=10.0, settings={"warm_cache": True}))["time"]
    assert not goal["met"] and "not judged" in goal["text"]


def test_speed_plan_summary_counts_int8_layers_apart():
    from benchmarks.speed.prepare import plan_summary
    from lut_tvm.plan import LayerPlan, Plan
    from lut_tvm.weights import LayerKind

    lut = LayerPlan("fc1", LayerKind.DENSE, (64, 32), "f1", np.zeros((16, 16, 4), np.float32))
    summary = plan_summary(Plan([lut, LayerPlan.int8_dense("fc2", (32, 10), "f2")]))
    assert summary["V"] == {"4": 1, "int8": 1} and summary["K"] == [16]
    assert summary["names"] == ["fc1 (V=4, C=16)", "fc2 (int8)"]
