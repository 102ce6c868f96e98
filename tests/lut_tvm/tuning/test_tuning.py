"""Tuning: a short run (2 trials per task) on the demo CNN proves tune -> log -> compile; broken
and foreign logs are reported and skipped; Ctrl-C keeps the records; codes stay in range."""

from __future__ import annotations

import json
import logging
import re
import shutil

import numpy as np
import pytest

import lut_tvm
from lut_tvm import _tvm_compat
from lut_tvm.targets import resolve_target
from lut_tvm.tuning import keys, logs
from lut_tvm.tuning.tune import count_records, format_summary, tune_model

pytestmark = [
    pytest.mark.filterwarnings("ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore:Renaming name:UserWarning"),
]

BATCH = 64  # rows >= the shuffle width (64 lanes on AVX-512): the dense LUT uses the shuffle lookup
TRIALS = 2
# The LUT primitives (encode, gather lookup, shuffle lookup) and one dense op: enough to prove
# tune -> log -> compile within the test budget (every task of the model: `lut-tvm tune`).
TASKS = ["lut_encode_dense", "lut_lookup", "matmul"]
# The run is stopped (like Ctrl-C) after this many batches have been committed. The scheduler's
# first round measures one batch per task before committing any: those are all kept.
BATCHES_BEFORE_CTRL_C = 3
APPLIED = re.compile(r"applied tuning log (\S+) \((\d+) of (\d+) functions\)")


@pytest.fixture(scope="module")
def demo():
    """The demo CNN (seeded, untrained), a k-means plan on sklearn digits, one input batch."""
    import torch  # pylint: disable=import-outside-toplevel

    from lut_tvm.demo import digits_cnn, load_digits_split  # pylint: disable=import-outside-toplevel

    torch.manual_seed(0)
    model = digits_cnn().eval()
    x_train, x_test, _, _ = load_digits_split(0)
    example = (x_test[:BATCH],)
    plan = lut_tvm.build_kmeans_plan(model, x_train[:256], lut_tvm.PlanPolicy(seed=0),
                                     example_inputs=example)
    return model, plan, example


@pytest.fixture(scope="module")
def tuned(demo, tmp_path_factory):
    """One short run, stopped like Ctrl-C after a few batches (a single session keeps the test
    budget: worker start-up and the model import are paid once)."""
    model, plan, example = demo
    log_dir = tmp_path_factory.mktemp("tuning_logs")
    batches = []

    def interrupt(task_id, measured):
        batches.append(task_id)
        if len(batches) == BATCHES_BEFORE_CTRL_C:
            raise KeyboardInterrupt  # what Ctrl-C does between two batches

    result = tune_model(model, plan, "native", TRIALS, log_dir=log_dir, example_inputs=example,
                        progress=False, task_filter=TASKS, on_measure=interrupt)
    return log_dir, result, batches


@pytest.fixture(scope="module")
def untuned(demo):
    model, plan, example = demo
    compiled = lut_tvm.compile(model, plan, example_inputs=example, tuning_logs=False)
    return compiled, compiled(*example)


def _compile_logged(demo, log_dir, caplog):
    model, plan, example = demo
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lut_tvm"):
        compiled = lut_tvm.compile(model, plan, example_inputs=example, tuning_logs=log_dir)
    return compiled, caplog.text


def test_tune_writes_a_keyed_log_that_compile_applies(demo, tuned, untuned, caplog):
    log_dir, result, _ = tuned
    target = resolve_target("native")
    assert result.log_dir == keys.log_path(log_dir, target)
    key = json.loads((result.log_dir / keys.KEY_FILE).read_text())
    assert key["target"] == keys.target_string(target)
    assert key["tvm_version"] == _tvm_compat.TVM_VERSION
    assert result.records == count_records(result.log_dir) > len(result.tasks)
    kinds = {task.kind for task in result.tasks}
    assert {"lookup_dense_shuffle", "dense"} <= kinds
    assert any(kind.startswith("lookup_conv2d") for kind in kinds)  # gather or shuffle form
    assert any(kind.startswith("encode_dense") for kind in kinds)
    assert all(task.default_sec and task.tuned_sec for task in result.tasks)
    # The scheduler's first round measured one batch of each task before the stop: all are kept.
    assert len(result.tasks) > BATCHES_BEFORE_CTRL_C
    assert all(0 < task.trials <= TRIALS for task in result.tasks)
    assert "speedup" in format_summary(result)

    compiled, text = _compile_logged(demo, log_dir, caplog)
    match = APPLIED.search(text)
    assert match, text
    assert match.group(1) == str(result.log_dir)
    assert int(match.group(2)) == len(result.tasks) < int(match.group(3))
    # Same input, same codes: the tuned schedules compute what the default ones do.
    np.testing.assert_allclose(compiled(*demo[2]), untuned[1], rtol=1e-5, atol=1e-5)


def test_corrupt_log_is_reported_by_file_and_skipped(demo, tuned, untuned, tmp_path, caplog):
    log_dir, _, _ = tuned
    broken = tmp_path / "logs"
    shutil.copytree(log_dir, broken)
    records = keys.log_path(broken, resolve_target("native")) / keys.RECORD_FILE
    text = records.read_text()
    records.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # cut mid-record

    compiled, text = _compile_logged(demo, broken, caplog)
    assert "WARNING" in caplog.text or any(r.levelno == logging.WARNING for r in caplog.records)
    assert f"{records} line" in text and "not valid JSON" in text
    assert not APPLIED.search(text)
    np.testing.assert_allclose(compiled(*demo[2]), untuned[1], rtol=1e-5, atol=1e-5)


def test_foreign_logs_are_not_applied(tuned, tmp_path, caplog):
    log_dir, _, _ = tuned
    target = resolve_target("native")
    folder = keys.log_path(log_dir, target)
    # Another target's log placed in this target's folder: reported by its key file, skipped.
    moved = keys.log_path(tmp_path, target)
    shutil.copytree(folder, moved)
    key = json.loads((moved / keys.KEY_FILE).read_text())
    key["target"] = keys.target_string(resolve_target("arm64"))
    (moved / keys.KEY_FILE).write_text(json.dumps(key))
    with caplog.at_level(logging.INFO, logger="lut_tvm"):
        assert logs.find_log(tmp_path, target) is None
    assert f"{moved / keys.KEY_FILE}" in caplog.text and "made for target" in caplog.text
    # A log for another TVM version under another key folder of the same device: skipped.
    key["target"] = keys.target_string(target)
    key["tvm_version"] = "0.0.1"
    (moved / keys.KEY_FILE).write_text(json.dumps(key))
    assert logs.find_log(tmp_path, target) is None
    # The same log is never looked up for another target.
    assert logs.find_log(log_dir, resolve_target("arm64")) is None
    assert logs.find_log(log_dir, target) == folder


def test_interrupted_tuning_keeps_a_usable_log_and_no_workers(tuned):
    log_dir, result, batches = tuned
    assert result.interrupted and len(batches) == BATCHES_BEFORE_CTRL_C  # no hook call after
    # Every default record and every measured candidate is on disk, in a loadable log.
    measured = sum(task.trials for task in result.tasks)
    assert len(result.tasks) <= measured <= TRIALS * len(result.tasks)
    assert result.records == len(result.tasks) + measured
    assert logs.corrupt_file(result.log_dir) is None
    assert logs.find_log(log_dir, resolve_target("native")) == result.log_dir
    assert _tvm_compat.popen_worker_pids() == []


def test_codes_are_allocated_inside_the_table():
    from schedules.lut_kernels import lookup_conv2d_func  # pylint: disable=import-outside-toplevel

    from lut_tvm.tuning.measure import index_bounds  # pylint: disable=import-outside-toplevel
    from lut_tvm.tuning.worker_fns import alloc_arguments  # pylint: disable=import-outside-toplevel

    func = lookup_conv2d_func((2, 4, 4, 3), 16, 8, True)
    bounds = index_bounds(func)
    names = [str(p.name) for p in func.params]
    assert bounds[names.index("codes")] == 16
    assert all(b is None for n, b in zip(names, bounds) if n != "codes")
    info = [("TENSOR", "uint8", [2, 4, 4, 3]), ("TENSOR", "int8", [3, 16, 8]),
            ("TENSOR", "float32", [8])]
    codes, table, scale = alloc_arguments(bounds[:3], _tvm_compat.cpu_device(), info, 1)[0]
    assert codes.numpy().max() < 16 and codes.numpy().min() >= 0
    assert table.numpy().dtype == np.int8 and np.isfinite(scale.numpy()).all()


def test_log_folder_is_keyed_by_target_and_named_by_device():
    avx512, avx2 = resolve_target("x86-avx512"), resolve_target("x86-avx2")
    assert keys.device_name(avx512) == "x86-avx512"
    assert keys.device_name(avx2) == "x86-avx2"
    assert keys.key_id(keys.log_key(avx512)) != keys.key_id(keys.log_key(avx2))
    # The core count is a run-time choice: it does not split the logs.
    assert keys.log_path("d", resolve_target("x86-avx512", num_cores=7)) == keys.log_path("d", avx512)


def test_cli_has_tune():
    from lut_tvm.cli import build_parser  # pylint: disable=import-outside-toplevel

    args = build_parser().parse_args(["tune", "m.onnx", "--plan", "p.npz", "--trials", "3",
                                      "--log-dir", "d", "--target", "x86-avx512"])
    assert (args.command, args.trials, args.log_dir, args.target) == ("tune", 3, "d", "x86-avx512")
