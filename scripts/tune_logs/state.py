"""What was tuned (``TUNED.json``, by structural hash, for one log key) and the report
(``TUNED.md``) written from it; pruning a log to its best record per workload."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

STATE_FILE, REPORT_FILE = "TUNED.json", "TUNED.md"
STATE_FORMAT = "scripts.tune_logs"
LEGACY_STATE_FORMATS = ("benchmarks.speed.tune_logs",)  # this tool's name before it moved to scripts/


class TunedState:
    """``TUNED.json``: every task tuned (by structural hash) and every case's row, for one log key."""

    def __init__(self, path: Path, key_id: str):
        self.path, self.key_id = path, key_id
        self.tasks: dict[str, dict] = {}
        self.cases: dict[str, dict] = {}
        self.runs: list[dict] = []
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if saved.get("format") not in (STATE_FORMAT, *LEGACY_STATE_FORMATS) or saved.get("key") != key_id:
            print(f"{path}: made for another log key or format; starting afresh", file=sys.stderr)
            return
        self.tasks, self.cases, self.runs = saved["tasks"], saved["cases"], saved.get("runs", [])

    def done(self, task_hash: str) -> bool:
        return self.tasks.get(task_hash, {}).get("complete", False)

    def save(self) -> None:
        from lut_tvm.files import write_json_atomic  # pylint: disable=import-outside-toplevel

        write_json_atomic(self.path, {"format": STATE_FORMAT, "key": self.key_id, "tasks": self.tasks,
                                      "cases": self.cases, "runs": self.runs})



def to_us(seconds):
    return None if seconds is None else round(seconds * 1e6, 2)


def case_latency(row: dict, state: TunedState) -> tuple[float, float, int]:
    """``(default ms, tuned ms, tasks counted)``: the runner's task times weighted by calls, over
    the case's tasks that have both (a shared task counts with its times from the case that tuned it)."""
    default = tuned = 0.0
    counted = 0
    for info in row["tasks"].values():
        task = state.tasks.get(info["hash"], {})
        if task.get("default_us") and task.get("tuned_us"):
            default += info["calls"] * task["default_us"] / 1e3
            tuned += info["calls"] * task["tuned_us"] / 1e3
            counted += 1
    return default, tuned, counted


def render_report(state: TunedState, device: str, log_path: Path) -> str:
    """``TUNED.md``: one row per case, then each case's tasks."""
    lines = [f"# Tuning logs for the speed benchmark and the demo CNN ({device})", "",
             f"Written by `python -m scripts.tune_logs`; log `{log_path.parent.name}/{log_path.name}`.",
             ("Latencies are MetaSchedule's runner times on this machine (2 cores shared with other jobs: "
              "noisy), each task's mean weighted by its calls in the model, summed over the case's tasks "
              "(a task shared with an earlier case counts with the times measured there). "
              "default = the default schedule rules, tuned = the log's best record."), "", "## Runs", ""]
    lines += [f"- {run['date']}: `{run['command']}`, {run['trials']} trials per task, {run['wall_s']} s, "
              f"load average {run['load_start']} -> {run['load_end']}{', interrupted' if run['interrupted'] else ''}"
              for run in state.runs]
    lines += ["", "## Cases", "",
              "| case | tasks | tuned here | shared | trials | default ms | tuned ms | speedup | wall s | status |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, row in state.cases.items():
        default, tuned, counted = case_latency(row, state)
        total = len(row["tasks"])
        own = row.get("own")
        split = f"{len(own)} | {total - len(own)}" if own is not None else "- | -"  # None: not tuned yet
        times = (f"{default:.3f}" + ("" if counted == total else f" ({counted} of {total} tasks)")
                 + f" | {tuned:.3f} | {default / tuned:.2f}x") if counted else "- | - | -"
        lines.append(f"| {name} | {total} | {split} | {row['trials']} | {times} | {row.get('wall_s', '-')} | "
                     f"{row['status']}" + (f" ({row['session']})" if row.get("session", name) != name else "") + " |")
    lines += ["", "## Tasks", ""]
    for name, row in state.cases.items():
        lines += [f"### {name}", "", "| task | kind | calls | default us | tuned us | speedup | trials | tuned in |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for task_name, info in row["tasks"].items():
            task = state.tasks.get(info["hash"], {})
            default, tuned = task.get("default_us"), task.get("tuned_us")
            speedup = f"{default / tuned:.2f}x" if default and tuned else "-"
            lines.append(f"| {task_name} | {task.get('kind', '-')} | {info['calls']} | {default or '-'} | "
                         f"{tuned or '-'} | {speedup} | {task.get('trials', '-')} | {task.get('case', 'not yet')} |")
        lines.append("")
    return "\n".join(lines)


def prune_in_place(log_path: Path) -> int:
    """Replace the log in ``log_path`` by its best record per workload; returns the records kept."""
    import shutil  # pylint: disable=import-outside-toplevel

    from lut_tvm.tuning import keys  # pylint: disable=import-outside-toplevel
    from lut_tvm.tuning.tune import prune_log  # pylint: disable=import-outside-toplevel

    staging = Path(tempfile.mkdtemp(prefix=".prune_", dir=log_path.parents[1]))  # not a device folder
    try:
        kept = prune_log(log_path, staging)
        for name in (keys.WORKLOAD_FILE, keys.RECORD_FILE):
            os.replace(staging / name, log_path / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return kept

