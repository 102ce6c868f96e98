"""The demo (a fast variant: 3 epochs, V = 16 only, no fine-tuning): demo_out/summary.json has per
row (original, dense TVM, LUT) the accuracy and median latency, the thread count and batch; the LUT
row's accuracy is what the exported library computes on the test split, and the plan is the one
written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lut_tvm
from lut_tvm.demo import EVAL_BATCH, load_digits_split, run_demo

pytestmark = pytest.mark.filterwarnings(
    "ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo_out")
    before = torch.get_num_threads()
    try:
        returned = run_demo(folder, threads=2, seed=0, epochs=3, sub_lens=(16,), timing_repeat=2, finetune=0)
    finally:
        torch.set_num_threads(before)
    return folder, returned


def test_summary_fields(demo_out):
    folder, returned = demo_out
    summary = json.loads((folder / "summary.json").read_text())
    assert summary == json.loads(json.dumps(returned))
    assert summary["threads"] == 2 and summary["batch"] == EVAL_BATCH
    assert [row["name"] for row in summary["rows"]] == ["original (PyTorch)", "dense TVM", "LUT TVM"]
    for row in summary["rows"]:
        assert 0 <= row["accuracy"] <= 100 and row["latency_ms"] > 0
    original, dense, _ = summary["rows"]
    assert abs(original["accuracy"] - dense["accuracy"]) <= 100 / summary["test_samples"]  # float rounding
    assert summary["optimize"]["validation_accuracy_original"] - summary["optimize"]["validation_accuracy_lut"] \
        <= summary["budget_points"]


def test_lut_row_is_the_exported_library(demo_out):
    folder, _ = demo_out
    summary = json.loads((folder / "summary.json").read_text())
    _, x_test, _, y_test = load_digits_split(0)
    library = lut_tvm.load(folder / "digits_lut.so")
    preds = np.concatenate([library(x_test[i : i + EVAL_BATCH]).argmax(-1)
                            for i in range(0, len(x_test), EVAL_BATCH)])
    assert summary["rows"][2]["accuracy"] == pytest.approx((preds == y_test).mean() * 100)
    plan = lut_tvm.Plan.load(folder / "digits_plan.npz")
    assert {l.name: l.sub_vector_len for l in plan.layers if not l.is_int8} == {
        n: v["V"] for n, v in summary["lut_layers"].items()}
    assert [l.name for l in plan.layers if l.is_int8] == summary["int8_layers"]
    assert library.info.lut_layers == [l.name for l in plan.layers]
    assert (folder / "optimize_report" / "report.md").is_file()
