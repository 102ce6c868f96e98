"""The tuning-log producer (scripts/tune_logs/) on one small kernel case,
2 trials into a temporary log: compile applies the records and computes what the untuned build
and the NumPy reference do; a second run finds nothing left to tune."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import lut_tvm
from lut_tvm import reference as ref
from lut_tvm.targets import host_cpu_flags, resolve_target
from lut_tvm.tuning import keys

pytest.importorskip("onnxruntime", reason="the speed benchmark's case folders need ONNX Runtime (.[bench])")

from scripts import tune_logs  # noqa: E402  pylint: disable=wrong-import-position
from benchmarks.speed.models import load_torch_model  # noqa: E402  pylint: disable=wrong-import-position
from benchmarks.speed.prepare import read_meta  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.skipif(not {"avx512f", "avx512bw"} <= host_cpu_flags(),
                       reason="the driver tunes for x86-avx512: this CPU cannot run its code"),
]

FOLDER = "ResNet-18_conv-stem"  # 3->64 3x3 at 32x32, batch 1, V = 9: C = 3 codebooks
CASE = f"{FOLDER}/LUT V=9"
TARGET = "x86-avx512"
NEAR_TIE = 1e-4
APPLIED = re.compile(r"\((\d+) of (\d+) functions\)$")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One driver run: the kernel case's LUT model, 2 trials per task, into a temporary log."""
    root = tmp_path_factory.mktemp("tune_logs")
    argv = ["--only", "kernels", "--cases", CASE, "--trials", "2", "--target", TARGET,
            "--log-dir", str(root / "logs"), "--work", str(root / "work")]
    assert tune_logs.main(argv) == 0
    return root, argv


def _case(root):
    folder = root / "work" / "kernels" / FOLDER
    meta = read_meta(folder)
    plan = lut_tvm.Plan.load(folder / "plan_V9.npz")
    return meta, load_torch_model(meta, folder), plan, np.load(folder / "input.npy")


def _device_dir(root):
    return keys.log_path(root / "logs", resolve_target(TARGET)).parent


def test_driver_writes_records_that_compile_applies(tuned):
    root, _ = tuned
    meta, model, plan, x = _case(root)
    compiled = lut_tvm.compile(model, plan, target=TARGET, example_inputs=(x,), tuning_logs=root / "logs")
    said = APPLIED.search(compiled.info.tuning_log)
    assert said, f"the driver's log was not applied: {compiled.info.tuning_log!r}"
    applied, total = map(int, said.groups())
    assert applied == total >= 2  # the encode and the lookup kernel at least
    untuned = lut_tvm.compile(model, plan, target=TARGET, example_inputs=(x,), tuning_logs=False)
    assert untuned.info.tuning_log == ""
    got = compiled(x)
    np.testing.assert_allclose(got, untuned(x), rtol=1e-5, atol=1e-5)

    # The LUT math in NumPy, on the output positions whose codes are not near-ties.
    case = meta["case"]
    strides, padding = (case["stride"],) * 2, (case["padding"],) * 4
    weight, bias = model.layer.weight.detach().numpy(), model.layer.bias.detach().numpy()
    centroids = plan.layers[0].centroids
    want = ref.lut_conv2d(x, centroids, weight, bias, strides, padding)
    rows, (batch, out_h, out_w) = ref.im2col_nchw(x, weight.shape[2:], strides, padding)
    clear = (ref.encode_margin(rows, centroids).min(-1) > NEAR_TIE).reshape(batch, 1, out_h, out_w)
    assert clear.mean() > 0.95
    np.testing.assert_allclose(np.where(clear, got, 0), np.where(clear, want, 0), rtol=1e-4, atol=1e-4)


def test_report_lists_the_case_with_its_tasks_and_times(tuned):
    root, _ = tuned
    state = json.loads((_device_dir(root) / tune_logs.STATE_FILE).read_text())
    row = state["cases"][CASE]
    assert row["status"] == "tuned" and len(row["new"]) == len(row["tasks"]) >= 2
    assert 0 < row["trials"] <= 2 * len(row["tasks"])
    for info in row["tasks"].values():
        task = state["tasks"][info["hash"]]
        assert task["complete"] and task["default_us"] > 0 and task["tuned_us"] > 0
        assert task["tuned_us"] <= task["default_us"]  # the default schedule is a record too
    report = (_device_dir(root) / tune_logs.REPORT_FILE).read_text()
    assert f"| {CASE} | {len(row['tasks'])} | {len(row['tasks'])} | 0 |" in report


def test_second_run_tunes_nothing_already_tuned(tuned):
    root, argv = tuned
    records = keys.RECORD_FILE
    log = keys.log_path(root / "logs", resolve_target(TARGET)) / records
    before = log.read_text()
    assert tune_logs.main(argv) == 0
    state = json.loads((_device_dir(root) / tune_logs.STATE_FILE).read_text())
    row = state["cases"][CASE]
    assert row["status"] == "tuned" and row["new"] == [] and len(row["own"]) == len(row["tasks"])
    assert log.read_text() == before  # no task measured again, not even its default schedule
    assert len(state["runs"]) == 2
