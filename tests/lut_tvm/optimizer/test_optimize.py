"""optimize on a small MLP and CNN (seeded, budget 2.5 points): the chosen plan meets the budget on the
eval data measured through the compiled model, it is not slower by the cost model than any single-V
plan that also meets it, the report says what was chosen, and a re-run resumes from the cache."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from optimizer_settings import FAST

import lut_tvm
from lut_tvm.optimizer.evaluate import loss_margin, metric_value
from lut_tvm.optimizer.holdback import split_eval
from lut_tvm.optimizer.inputs import DEFAULT_VERIFY_FRACTION
from lut_tvm.optimizer.layers import is_int8
from lut_tvm.optimizer.report import write_report

BUDGET = 2.5


def compiled_outputs(model, plan, x, batch):
    """Outputs of ``model`` compiled with ``plan`` on the whole batches of ``x``."""
    compiled = lut_tvm.compile(model, plan, example_inputs=(x[:batch],), tuning_logs=False)
    usable = len(x) - len(x) % batch
    return np.concatenate([np.asarray(compiled(x[i : i + batch])) for i in range(0, usable, batch)])


def compiled_accuracy(model, plan, x, y, batch):
    """Accuracy (%) of ``model`` compiled with ``plan`` on ``x``, computed here with NumPy."""
    outputs = compiled_outputs(model, plan, x, batch)
    return float((outputs.argmax(-1) == y[: len(outputs)]).mean() * 100), len(outputs)


def torch_accuracy(model, x, y):
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).numpy().argmax(-1) == y).mean() * 100)


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def optimized(request, tmp_path_factory):
    model, calibration, x, y = request.getfixturevalue(f"{request.param}_case")
    cache = tmp_path_factory.mktemp(f"cache_{request.param}")
    result = lut_tvm.optimize(model, calibration, x, y, budget=BUDGET, cache_dir=cache, **FAST)
    return request.param, (model, calibration, x, y), result, cache


def test_chosen_plan_meets_budget_on_compiled_model(optimized):
    _, (model, _, x, y), result, _ = optimized
    batch = result.report["batch"]
    searched = split_eval(x, y, DEFAULT_VERIFY_FRACTION, seed=0)  # the samples the search measured on
    original = torch_accuracy(model, searched.search_x, searched.search_y)
    assert result.report["original_metric"] == pytest.approx(original)
    assert result.report["held_back"]["samples"] == len(x) - len(searched.search_x)
    assert result.choice, "a LUT layer pays in these models: the search should choose one"
    usable = len(x) - len(x) % batch
    accuracy, usable = compiled_accuracy(model, result.plan, x, y, batch)
    original_usable = torch_accuracy(model, x[:usable], y[:usable])
    assert original_usable - accuracy <= BUDGET + 100 / usable  # the last partial batch left out here
    assert original - result.report["chosen_metric_compiled"] <= BUDGET
    assert [l.name for l in result.plan.layers] == list(result.choice)
    quants = {(c["layer"], c["sub_len"]): c["table_quant"] for c in result.report["candidates"]}
    for layer in result.plan.layers:
        if layer.is_int8:
            assert is_int8(result.choice[layer.name]) and layer.kind.value == "dense"
            continue
        assert layer.sub_vector_len == result.choice[layer.name]
        assert layer.num_centroids == 16
        assert layer.table_quant.value == quants[(layer.name, layer.sub_vector_len)]


def optimizer_centroids(model, calibration, example, cache, result):
    """A CentroidBank on the optimizer's cache (the same k-means centroids it searched with) with the
    table scales its sensitivity chose per candidate."""
    from lut_tvm.frontends import import_model
    from lut_tvm.optimizer.layers import CentroidBank, model_layers
    from lut_tvm.plan import TableQuant

    imported = import_model(model, (example,))
    bank = CentroidBank(imported, model_layers(imported, FAST["sub_lens"]), calibration, cache,
                        FAST["max_rows"], seed=0)
    for cand in result.report["candidates"]:
        if cand["sub_len"] != "int8":
            bank.table_quant[(cand["layer"], cand["sub_len"])] = TableQuant(cand["table_quant"])
    return bank


def single_v_plans(result):
    """``{label: {layer: V}}``: at each V, every layer whose D admits it, and the same without the
    first and last layer (LUT-NN's default set)."""
    rows = result.report["layers"]
    plans = {}
    for sub_len in FAST["sub_lens"]:
        every = {r["layer"]: sub_len for r in rows if r["D"] % sub_len == 0}
        middle = {n: v for n, v in every.items() if n not in (rows[0]["layer"], rows[-1]["layer"])}
        for label, plan in ((f"every layer at V={sub_len}", every), (f"middle layers at V={sub_len}", middle)):
            if plan and plan not in plans.values():
                plans[label] = plan
    return plans


def test_not_slower_than_any_single_v_plan_within_budget(optimized):
    _, (model, calibration, x, y), result, cache = optimized
    batch = result.report["batch"]
    original = torch_accuracy(model, x, y)
    chosen_ms = result.cost_model.predict_ms(result.choice)
    bank = optimizer_centroids(model, calibration, x[:batch], cache, result)
    checked = 0
    for label, choice in single_v_plans(result).items():
        plan = bank.plan(choice)
        outputs = compiled_outputs(model, plan, x, batch)
        usable = len(outputs)
        accuracy = float((outputs.argmax(-1) == y[:usable]).mean() * 100)
        with torch.no_grad():
            reference = model(torch.from_numpy(x[:usable])).numpy()
        # the optimizer's acceptance: loss plus its standard error within the budget, with its own
        # centroids and table scales; the search measured with the torch forward, this is the compiled
        # model: a plan within a sample or two of the budget may fall on either side of it (an encode
        # near-tie), so only plans that meet it clearly must not be faster than the chosen one.
        margin = loss_margin("accuracy", outputs, reference, y[:usable])
        if torch_accuracy(model, x[:usable], y[:usable]) - accuracy + margin > BUDGET - 2 * 100.0 / usable:
            continue
        checked += 1
        assert chosen_ms <= result.cost_model.predict_ms(choice) + 1e-9, (
            f"{label} meets the budget and is predicted faster than the chosen {result.choice}")
    assert original >= 90
    assert checked >= 1, "no single-V plan met the budget: the comparison checked nothing"


def test_report_names_every_layer_and_writes_files(optimized, tmp_path):
    _, _, result, _ = optimized
    report = result.report
    assert {r["layer"] for r in report["layers"]} >= set(result.choice)
    for row in report["layers"]:
        assert row["why"].startswith("int8" if row["int8"] else "V=" if row["chosen_V"] else "dense")
    lat = report["latency_ms"]
    assert lat["predicted"] == pytest.approx(result.cost_model.predict_ms(result.choice))
    assert lat["measured"] > 0 and lat["dense_measured"] > 0
    for cand in report["candidates"]:
        assert cand["sub_len"] in (*FAST["sub_lens"], "int8") and cand["status"] != "untried"
    written = write_report(report, tmp_path)
    names = {p.name for p in written}
    assert {"report.md", "report.json"} <= names
    assert json.loads((tmp_path / "report.json").read_text())["choice"] == {
        name: "int8" if is_int8(option) else int(option) for name, option in result.choice.items()}
    assert "| layer |" in (tmp_path / "report.md").read_text()


def test_rerun_resumes_from_cache(optimized):
    _, (model, calibration, x, y), result, cache = optimized
    again = lut_tvm.optimize(model, calibration, x, y, budget=BUDGET, cache_dir=cache, **FAST)
    assert again.report["new_timings"] == 0
    assert again.choice == result.choice
    assert again.cost_model.dense_ms == result.cost_model.dense_ms


def test_cosine_metric_against_numpy():
    out = np.array([[1.0, 0.0], [1.0, 1.0]])
    ref = np.array([[1.0, 0.0], [1.0, -1.0]])
    assert metric_value("cosine", out, ref, None) == pytest.approx(50.0)
    assert metric_value("accuracy", out, ref, np.array([0, 1])) == pytest.approx(50.0)


def test_bad_inputs_one_line_errors(mlp_case):
    model, calibration, x, y = mlp_case
    with pytest.raises(lut_tvm.LutTvmError, match="needs integer labels 'y'"):
        lut_tvm.optimize(model, calibration, x, None, metric="accuracy")
    with pytest.raises(lut_tvm.LutTvmError, match=r"labels 'y' have shape \[3\]"):
        lut_tvm.optimize(model, calibration, x, y[:3])
    with pytest.raises(lut_tvm.LutTvmError, match=r"evaluation data 'x' has samples of shape \[32\]"):
        lut_tvm.optimize(model, calibration, x[:, :32], y)
    with pytest.raises(lut_tvm.LutTvmError, match="metric 'top5'"):
        lut_tvm.optimize(model, calibration, x, y, metric="top5")
    with pytest.raises(lut_tvm.LutTvmError, match=r"labels 'y' range from 20 to 29, but the model has 10 outputs"):
        lut_tvm.optimize(model, calibration, x, y + 20, **FAST)


def test_small_eval_set_is_flagged():
    from lut_tvm.optimizer.api import small_eval_note

    note = small_eval_note("accuracy", 256, 1.0)
    assert "256 samples" in note and "0.39 points" in note and "at least 400" in note
    assert small_eval_note("accuracy", 400, 1.0) is None
    assert small_eval_note("cosine", 10, 1.0) is None


def test_finetune_reverifies_on_compiled_model(mlp_case, digits):
    model, calibration, x, y = mlp_case
    with pytest.raises(lut_tvm.LutTvmError, match="finetune needs finetune_data"):
        lut_tvm.optimize(model, calibration, x, y, budget=BUDGET, finetune=1, **FAST)
    y_train = digits[2]
    result = lut_tvm.optimize(model, calibration, x, y, budget=BUDGET, finetune=1,
                              finetune_data=(calibration, y_train), **FAST)
    tuned = result.report["finetune"]
    assert tuned["epochs"] == 1
    assert (result.model is not model) == tuned["kept"]
    batch = result.report["batch"]
    accuracy, usable = compiled_accuracy(result.model, result.plan, x, y, batch)  # the plan binds to it
    assert torch_accuracy(model, x[:usable], y[:usable]) - accuracy <= BUDGET + 100 / usable


def test_report_has_pytorch_and_onnx_runtime_rows(optimized, tmp_path):
    pytest.importorskip("onnxruntime")
    _, (model, _, x, y), result, _ = optimized
    write_report(result.report, tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {row["label"]: row for row in report["peers"]}
    assert set(rows) == {"pytorch_fp32", "onnxruntime_fp32", "onnxruntime_int8"}
    for row in rows.values():
        assert "error" not in row, row
        assert row["threads"] == report["threads"] and row["ms"] > 0
    # PyTorch and ONNX Runtime fp32 compute the original model: torch's accuracy, up to an argmax near-tie
    searched = split_eval(x, y, DEFAULT_VERIFY_FRACTION, seed=0)  # peers are scored where the search was
    for label in ("pytorch_fp32", "onnxruntime_fp32"):
        assert rows[label]["metric"] == pytest.approx(torch_accuracy(model, searched.search_x, searched.search_y),
                                                      abs=100 / len(searched.search_x))
    # dynamic int8 rounds weights and activations: close to the original on these small models
    assert abs(rows["onnxruntime_int8"]["metric"] - report["original_metric"]) < 5
    markdown = (tmp_path / "report.md").read_text()
    for name in ("PyTorch fp32", "ONNX Runtime fp32", "ONNX Runtime int8 (dynamic)"):
        assert f"| {name}, {report['threads']} thread(s) | " in markdown


def peer_table_lines(rows) -> list[str]:
    """The summary-table lines of a minimal report with these peer rows, rendered."""
    from lut_tvm.optimizer.report import render_markdown

    report = {"model": "m", "metric": "accuracy", "budget": 1.0, "target": "llvm", "threads": 1, "batch": 8,
              "eval_samples": 16, "search_evaluator": "compiled", "original_metric": 90.0,
              "chosen_metric_search": 89.5, "chosen_metric_compiled": 89.5,
              "latency_ms": {"dense_measured": 1.0, "predicted": 0.5, "measured": 0.6, "predicted_saving": 0.5,
                             "measured_saving": 0.4, "dense_cost_model_base": 1.0},
              "layers": [], "candidates": [], "steps": [], "backed_off_after_compiled_check": [], "notes": [],
              "peers": [{"label": label, **row} for label, row in rows.items()]}
    names = tuple(row["name"] for row in rows.values())
    return [line for line in render_markdown(report).splitlines() if line.startswith(tuple(f"| {n}" for n in names))]


def test_peer_rows_say_when_onnx_runtime_is_missing(mlp_case, monkeypatch):
    from lut_tvm.peers import peer_rows

    model, _, x, _ = mlp_case
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    rows = peer_rows(model, x[:8], x[:16], threads=1, number=2, repeat=2)
    assert set(rows) == {"pytorch_fp32", "onnxruntime_fp32", "onnxruntime_int8"}
    for label in ("onnxruntime_fp32", "onnxruntime_int8"):
        assert rows[label]["error"] == "onnxruntime is not installed (pip install onnxruntime)"
        assert "ms" not in rows[label] and "outputs" not in rows[label]
    torch_row = rows["pytorch_fp32"]  # still measured, and computes the model
    assert torch_row["ms"] > 0
    with torch.no_grad():
        np.testing.assert_allclose(torch_row["outputs"], model(torch.from_numpy(x[:16])).numpy(), rtol=1e-5, atol=1e-5)
    lines = peer_table_lines({k: v for k, v in rows.items() if k != "pytorch_fp32"})
    assert len(lines) == 2 and all("not measured: onnxruntime is not installed" in line for line in lines)


def test_peer_rows_of_an_onnx_model_have_no_pytorch_row(mlp_case, tmp_path):
    from lut_tvm.peers import export_onnx, peer_rows

    model, _, x, _ = mlp_case
    rows = peer_rows(str(export_onnx(model, x[:8], tmp_path / "mlp.onnx")), x[:8], None, threads=1, number=2, repeat=2)
    assert rows["pytorch_fp32"]["error"].startswith("the model is an ONNX file")
    if importlib.util.find_spec("onnxruntime") is not None:
        assert rows["onnxruntime_fp32"]["ms"] > 0 and "outputs" not in rows["onnxruntime_fp32"]
