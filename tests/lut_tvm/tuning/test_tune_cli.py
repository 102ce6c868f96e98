"""``lut-tvm tune`` as a person uses it: Ctrl-C stops within seconds, keeps every measured record,
kills the workers and exits 130; logs go to the user's folder (which compile reads, ahead of the
shipped logs); a damaged log is repaired with one warning; the summary compares the default and
the tuned schedule measured in the same run; no TVM warning in the progress; every step says
what it is doing.

One ``tune`` subprocess (on a tiny pooling model, interrupted by a Ctrl-C sent to its whole
process group, as a terminal does) backs the CLI tests; trial counts stay tiny.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from lut_tvm import _tvm_compat
from lut_tvm.targets import resolve_target
from lut_tvm.tuning import keys, logs
from lut_tvm.tuning.tune import count_records, format_summary, tune_model

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "tuning_logs"
TASKS = 3  # max_pool2d, reshape, fused_matmul_add
STARTUP_TIMEOUT = 900  # seconds until the first tuned batch is in the log (a loaded 2-core box)
EXIT_LIMIT = 10.0  # seconds from Ctrl-C to the process gone
KEPT = re.compile(r"interrupted; kept (\d+) records in (\S+)")


@pytest.fixture(scope="module")
def pool_model(tmp_path_factory):
    """A tiny ONNX model with a max pool (its TIR carries a ``schedule_rule`` annotation), its
    weights and one input."""
    import torch  # pylint: disable=import-outside-toplevel
    from torch import nn  # pylint: disable=import-outside-toplevel

    folder = tmp_path_factory.mktemp("pool_model")
    torch.manual_seed(0)
    model = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 8)).eval()
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    path = folder / "pool.onnx"
    torch.onnx.export(model, (torch.from_numpy(x),), str(path), dynamo=False)
    weight = model[2].weight.detach().numpy().astype(np.float64)
    bias = model[2].bias.detach().numpy().astype(np.float64)
    return path, weight, bias, x


def reference(weight, bias, x: np.ndarray) -> np.ndarray:
    """MaxPool2d(2) -> flatten -> linear in NumPy."""
    pooled = x.reshape(x.shape[0], 1, 4, 2, 4, 2).max(axis=(3, 5))
    return pooled.reshape(x.shape[0], -1).astype(np.float64) @ weight.T + bias


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _record_files(cache: Path) -> list[Path]:
    return sorted((cache / "lut_tvm" / "tuning_logs").glob(f"*/*/{keys.RECORD_FILE}"))


@pytest.fixture(scope="module")
def interrupted(pool_model, tmp_path_factory):
    """``lut-tvm tune`` with the default log folder (``XDG_CACHE_HOME`` pointed at a temporary
    one), stopped by Ctrl-C to its process group once a tuned batch is in the log."""
    model = pool_model[0]
    work = tmp_path_factory.mktemp("interrupted")
    cache = work / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(cache)}
    env.pop(keys.ENV_LOG_DIR, None)
    shipped_before = _tree(SHIPPED)
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-m", "lut_tvm.cli", "tune", str(model), "--trials", "200"],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)  # its own process group: the Ctrl-C below reaches only it
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        before = 0
        while before <= TASKS:  # the defaults are TASKS records; more: a tuned batch is in
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no tuned batch in the log in time"
            time.sleep(0.2)
            files = _record_files(cache)
            before = count_records(files[0].parent) if files else 0
        workers = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C at a terminal does
        start = time.monotonic()
        out, err = proc.communicate(timeout=120)
        elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return {"returncode": proc.returncode, "elapsed": elapsed, "out": out, "err": err,
            "before": before, "workers": workers, "folder": _record_files(cache)[0].parent,
            "cache": cache, "shipped_before": shipped_before}


def test_ctrl_c_exits_130_within_seconds(interrupted):
    assert interrupted["returncode"] == 130, interrupted["err"][-3000:]
    assert interrupted["elapsed"] < EXIT_LIMIT, interrupted["err"][-3000:]
    assert "stopping: keeping the records measured so far" in interrupted["err"]


def test_ctrl_c_keeps_every_record_measured(interrupted):
    folder = interrupted["folder"]
    after = count_records(folder)
    assert after >= interrupted["before"] > TASKS
    assert logs.corrupt_file(folder) is None  # whole lines only
    kept = KEPT.search(interrupted["out"])
    assert kept, interrupted["out"]
    assert int(kept.group(1)) == after and kept.group(2) == str(folder)
    # Every record is one this run measured: failures are marked 1e10 s by MetaSchedule, and a
    # candidate the stop cut short is not written at all.
    lines = (folder / keys.RECORD_FILE).read_text().splitlines()
    secs = [json.loads(line)[1][1] for line in lines]
    assert sum(1 for s in secs if s and min(s) < 1e9) >= interrupted["before"] - TASKS


def test_ctrl_c_leaves_no_worker_and_no_traceback(interrupted):
    assert interrupted["workers"], "the run had no worker processes to check"
    alive = []
    for pid in interrupted["workers"]:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    assert not alive, f"workers still running: {alive}"
    assert "Traceback" not in interrupted["err"], interrupted["err"][-3000:]


def test_tune_writes_to_the_user_folder_not_the_shipped_logs(interrupted):
    folder = interrupted["folder"]
    assert folder.is_relative_to(interrupted["cache"] / "lut_tvm" / "tuning_logs")
    assert _tree(SHIPPED) == interrupted["shipped_before"]


def test_no_tvm_warning_inside_the_progress(interrupted):
    assert "Unknown schedule rule" not in interrupted["err"], interrupted["err"][-3000:]


def test_every_step_says_what_it_does_when_piped(interrupted):
    lines = interrupted["err"].splitlines()
    steps = ["loading TVM ...", "importing the model and extracting its tuning tasks ...",
             f"measuring the default schedules ({TASKS} tasks) ...", f"tuning ({TASKS * 200} trials) ..."]
    where = [lines.index(step) for step in steps]  # each one line, in order
    assert where == sorted(where), lines
    assert not any("\r" in line for line in lines)  # no terminal bar redraws in a pipe


def test_compile_finds_the_user_logs_ahead_of_the_shipped_ones(interrupted, pool_model, monkeypatch):
    import lut_tvm  # pylint: disable=import-outside-toplevel

    monkeypatch.setenv("XDG_CACHE_HOME", str(interrupted["cache"]))
    monkeypatch.delenv(keys.ENV_LOG_DIR, raising=False)
    user = interrupted["cache"] / "lut_tvm" / "tuning_logs"
    assert keys.user_log_dir() == user
    assert keys.search_log_dirs() == [user, SHIPPED]
    assert logs.resolve_log_dir(True) == [user, SHIPPED]

    path, weight, bias, x = pool_model
    compiled = lut_tvm.compile(str(path), None, example_inputs=(x,))
    said = compiled.info.tuning_log
    assert said.startswith(str(interrupted["folder"])), said
    applied, total = map(int, re.search(r"\((\d+) of (\d+) functions\)$", said).groups())
    assert 0 < applied <= total
    shipped = logs.find_log(SHIPPED, resolve_target("native"))
    assert (str(shipped) in said) == (shipped is not None)
    np.testing.assert_allclose(compiled(x), reference(weight, bias, x), rtol=1e-5, atol=1e-5)


def test_tune_repairs_a_truncated_log_and_summarizes_this_run_only(interrupted, pool_model,
                                                                  tmp_path, caplog):
    """A log whose last line was cut (a killed run) and whose old records claim impossible times:
    tune drops the cut line with one warning, and its summary compares the default schedule with
    the best of this run only."""
    root = tmp_path / "logs"
    folder = keys.log_path(root, resolve_target("native"))
    shutil.copytree(interrupted["folder"], folder)
    records = folder / keys.RECORD_FILE
    lines = records.read_text().splitlines()
    fake = []
    for line in lines:  # every old record 1000x faster than anything measurable
        record = json.loads(line)
        record[1][1] = [1e-12]
        fake.append(json.dumps(record))
    records.write_text("\n".join(fake) + "\n" + fake[-1][: len(fake[-1]) // 2])
    old = len(fake)

    path, _, _, x = pool_model
    with caplog.at_level(logging.WARNING, logger="lut_tvm"):
        result = tune_model(str(path), None, "native", 2, log_dir=root, example_inputs=(x,),
                            progress=False, task_filter=["fused_matmul"])
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and str(records) in warnings[0] and "skipped 1 " in warnings[0]
    assert logs.corrupt_file(folder) is None
    new = [json.loads(line) for line in records.read_text().splitlines()[old:]]
    assert result.records == old + len(new) and len(new) >= 2  # the default + 1-2 candidates

    (task,) = result.tasks
    means = [sum(r[1][1]) / len(r[1][1]) for r in new if min(r[1][1]) < 1e9]
    assert task.default_sec == pytest.approx(means[0])  # the default is committed first
    assert task.tuned_sec == pytest.approx(min(means))  # this run's best, not the fake 1e-12
    assert task.speedup == pytest.approx(means[0] / min(means))
    summary = format_summary(result)
    assert "both timed in this run" in summary
    assert _tvm_compat.popen_worker_pids() == []
