"""Tune the shipped MetaSchedule logs (run from the repository root) for every case of the speed benchmark and the demo CNN.

    python -m scripts.tune_logs [--target x86-avx512] [--trials N] [--only kernels|models|demo]
                                         [--cases SUBSTR ...] [--log-dir DIR] [--work DIR]
                                         [--max-minutes M] [--prune] [--dry-run]

Cases, each tuned as its LUT plan model and as its dense model (``lut_tvm.tuning.tune_model``):
the speed benchmark's kernel cases (``shapes.kernel_cases``), its whole digits CNN (every plan)
and all-MiniLM-L6-v2, then the demo CNN of ``make demo`` (``lut_tvm.demo``: seeded digits CNN,
batch 72, k-means plan, as ``tuning_logs/README.md`` describes). Models, plans and inputs are
the benchmark's own: its case folders (``kernels.prepare_kernel``, ``models.prepare_digits`` /
``prepare_minilm``) are built in ``--work`` (complete ones are reused) and read back.

A task (PrimFunc) that several cases share is tuned once, by the first case that has it; the
others list it as shared. The one-layer kernel cases are tuned side by side (one ``tune_model``
session for the LUT ones, one for the dense ones), the other cases one session each. What was tuned is remembered by structural hash in
``<log dir>/<device>/TUNED.json``: a second run tunes only what is still missing. ``TUNED.md``
beside it is the table per case (tasks, trials, default vs tuned latency, wall time). Ctrl-C
stops after the batch in flight; every record is kept and both files are written.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from torch import nn

# Per task: 2 cores shared with other jobs, about 35 minutes for every case (see DEFAULT_TRIALS_NOTE).
DEFAULT_TRIALS = 8
DEFAULT_TRIALS_NOTE = "fits the ~35-minute budget on 2 cores (tuning_logs/README.md, Shipped logs)"
GROUPS = ("kernels", "models", "demo")
STATE_FILE, REPORT_FILE = "TUNED.json", "TUNED.md"
STATE_FORMAT = "scripts.tune_logs"
LEGACY_STATE_FORMATS = ("benchmarks.speed.tune_logs",)  # this tool's name before it moved to scripts/


class Deadline:
    """``--max-minutes``: ``check`` (tune_model's ``on_measure`` hook) stops the run like Ctrl-C once passed."""

    def __init__(self, minutes: float | None):
        self.end = None if minutes is None else time.time() + 60 * minutes

    @property
    def passed(self) -> bool:
        return self.end is not None and time.time() > self.end

    def check(self, *_):
        if self.passed:
            raise KeyboardInterrupt  # tune_model: stop after the batch in flight, keep the records


class SessionWatch:
    """tune_model's ``on_measure`` hook for one session: stops it at the deadline, and ends it once
    ``STALL_BATCHES`` batches in a row measured nothing. With trials <= 16 every task gets all
    its trials in its first batch; a task whose design space has fewer candidates then gets
    empty batches, and MetaSchedule would keep searching (seconds each) until the run is killed."""

    STALL_BATCHES = 3

    def __init__(self, deadline: Deadline):
        self.deadline, self.measured, self.empty, self.stalled = deadline, 0, 0, False

    def __call__(self, _task_id, measured: int):
        self.empty = self.empty + 1 if measured == self.measured else 0
        self.measured = measured
        if self.empty >= self.STALL_BATCHES:
            self.stalled = True
            raise KeyboardInterrupt  # tune_model: stop after the batch in flight, keep the records
        self.deadline.check()


@dataclass
class TuneCase:
    """One model to tune: ``load()`` gives ``(torch model, plan or plan file or None, example input)``."""

    name: str  # "<case folder>/dense" or "<case folder>/LUT <variant>"
    group: str  # one of GROUPS
    load: Callable[[], tuple]
    lut: bool  # with a LUT plan


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m scripts.tune_logs", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="x86-avx512", help="lut_tvm target name (default: x86-avx512)")
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                        help=f"measurements per task (default {DEFAULT_TRIALS}: {DEFAULT_TRIALS_NOTE})")
    parser.add_argument("--only", choices=GROUPS, help="tune one group of cases only")
    parser.add_argument("--cases", nargs="+", metavar="SUBSTR",
                        help="only the cases whose name ('<folder>/dense', '<folder>/LUT V=9') contains one "
                             "of these (e.g. /LUT: every LUT model); the part before a '/' selects the "
                             "folders to prepare")
    parser.add_argument("--log-dir", type=Path, help="tuning log root (default: the repository's tuning_logs/, "
                        "or $LUT_TVM_TUNING_LOGS)")
    parser.add_argument("--work", type=Path, help="the speed benchmark's case folders: reuse complete ones, "
                        "build missing ones here (default: a temporary folder)")
    parser.add_argument("--max-minutes", type=float,
                        help="stop like Ctrl-C once this much wall time has passed (records kept, report written)")
    parser.add_argument("--prune", action="store_true",
                        help="at the end keep each workload's best record only (what is shipped); "
                             "TUNED.json still says what was tuned, so a later run continues")
    parser.add_argument("--dry-run", action="store_true",
                        help="list every case's tasks and which are new, tune nothing, write nothing")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be >= 1")
    if args.max_minutes is not None and args.max_minutes <= 0:
        parser.error("--max-minutes must be > 0")
    return args


def wanted(name: str, patterns) -> bool:
    return not patterns or any(pattern in name for pattern in patterns)


def prepared_folders(args, work: Path, progress) -> list[tuple[str, Path]]:
    """``(group, folder)`` of every speed-benchmark case selected, prepared (or reused) in ``work``."""
    # pylint: disable=import-outside-toplevel
    from benchmarks.speed.kernels import prepare_kernel
    from benchmarks.speed.models import prepare_digits, prepare_minilm
    from benchmarks.common.peers import failure_text
    from benchmarks.speed.prepare import read_meta
    from benchmarks.speed.run import select_kernel_cases

    jobs = []
    if args.only in (None, "kernels"):
        jobs += [("kernels", work / "kernels" / case.key, lambda f, c=case: prepare_kernel(c, f))
                 for case in select_kernel_cases(quick=False)]
    if args.only in (None, "models"):
        jobs += [("models", work / "models" / "digits_cnn", prepare_digits),
                 ("models", work / "models" / "minilm", lambda f: prepare_minilm(f, [16]))]
    # "<folder part>/<case part>": the folder part selects the folders to prepare; a pattern
    # without "/" may match either part ("LUT" is in "<folder>/LUT V=9"), so it selects them all.
    folder_patterns = [pattern.split("/")[0] if "/" in pattern else "" for pattern in args.cases or ()]
    jobs = [job for job in jobs if wanted(job[1].name, folder_patterns)]
    ready = []
    for group, folder, prepare in progress(jobs, desc="preparing the benchmark's cases", unit="case"):
        if read_meta(folder) is None:
            try:
                prepare(folder)
            except Exception as err:  # pylint: disable=broad-except
                print(f"{folder.name}: could not be prepared, left out: {failure_text(err)}", file=sys.stderr)
                continue
        ready.append((group, folder))
    return ready


def folder_cases(group: str, folder: Path) -> list[TuneCase]:
    """The dense model and each LUT plan of a prepared case folder, as the benchmark compiles them."""
    # pylint: disable=import-outside-toplevel
    from benchmarks.speed.models import load_torch_model
    from benchmarks.speed.prepare import read_meta, variant_slug

    meta = read_meta(folder)

    def loader(plan_file):
        return lambda: (load_torch_model(meta, folder), plan_file, np.load(folder / "input.npy"))

    cases = [TuneCase(f"{folder.name}/dense", group, loader(None), lut=False)]
    for label in meta.get("lut_variants", {}):
        plan_file = folder / f"plan_{variant_slug(label)}.npz"
        if plan_file.is_file():
            cases.append(TuneCase(f"{folder.name}/LUT {label}", group, loader(plan_file), lut=True))
        else:
            print(f"{folder.name}: variant {label} has no {plan_file.name}, left out", file=sys.stderr)
    return cases


def demo_cases() -> list[TuneCase]:
    """The demo CNN (seeded, untrained: records key on shapes) with its k-means plan, and dense."""

    def load(with_plan: bool):
        import torch  # pylint: disable=import-outside-toplevel

        from lut_tvm.demo import EVAL_BATCH, digits_cnn, load_digits_split  # pylint: disable=C0415
        from lut_tvm.planner import PlanPolicy, build_kmeans_plan  # pylint: disable=C0415

        torch.manual_seed(0)
        model = digits_cnn().eval()
        x_train, x_test, _, _ = load_digits_split(0)
        x = x_test[:EVAL_BATCH]
        plan = build_kmeans_plan(model, x_train, PlanPolicy(seed=0), example_inputs=(x,)) if with_plan else None
        return model, plan, x

    return [TuneCase("demo_cnn/LUT k-means", "demo", lambda: load(True), lut=True),
            TuneCase("demo_cnn/dense", "demo", lambda: load(False), lut=False)]


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


class SideBySide(nn.Module):
    """One-layer models side by side, one input each: their layers tune in one session, paying
    the worker start-up and the default-schedule builds once for all of them."""

    def __init__(self, models):
        super().__init__()
        self.parts = nn.ModuleList(models)

    def forward(self, *inputs):
        return tuple(part(x) for part, x in zip(self.parts, inputs))


def session_inputs(cases: list[TuneCase]):
    """``(model, plan, example inputs, cases)`` of one case, or of several one-layer cases side by
    side: their plans merged, layers renamed after their part (plans bind by weight fingerprint);
    a case whose planned weight equals an earlier one's (same shape, same seed) is left out of
    the returned cases and the model."""
    from dataclasses import replace  # pylint: disable=import-outside-toplevel

    from lut_tvm.plan import Plan  # pylint: disable=import-outside-toplevel

    if len(cases) == 1:
        model, plan, example = cases[0].load()
        return model, plan, (example,), cases
    kept, layers, fingerprints = [], [], set()
    for case in cases:
        model, plan, example = case.load()
        plan = Plan.load(plan) if isinstance(plan, (str, Path)) else plan
        planned = plan.layers if plan is not None else []
        if any(layer.weight_fingerprint in fingerprints for layer in planned):
            continue
        fingerprints.update(layer.weight_fingerprint for layer in planned)
        layers += [replace(layer, name=f"parts.{len(kept)}.{layer.name}") for layer in planned]
        kept.append((case, model, example))
    merged = Plan(layers, provenance={"method": "scripts.tune_logs side by side"}) if layers else None
    return (SideBySide([model for _, model, _ in kept]), merged, tuple(example for _, _, example in kept),
            [case for case, _, _ in kept])


def model_tasks(model, plan, examples, tvm_target) -> list[tuple[str, str, int]]:
    """``(task name, structural hash, calls)`` of every task ``tune_model`` would extract."""
    # pylint: disable=import-outside-toplevel
    from lut_tvm._tvm_compat import structural_hash
    from lut_tvm.tuning.tune import extract_tasks, prepare_module

    tasks = extract_tasks(prepare_module(model, plan, tvm_target, examples), tvm_target)
    return [(task.task_name, structural_hash(task.dispatched[0]), int(task.weight)) for task in tasks]


def case_row(case: TuneCase, tvm_target, owner: dict, state: TunedState) -> dict:
    """The case's tasks; ``new``: those no earlier case has and not tuned before (to tune now;
    ``own`` once tuned)."""
    model, plan, examples, _ = session_inputs([case])
    tasks = model_tasks(model, plan, examples, tvm_target)
    new = [name for name, task_hash, _ in tasks if task_hash not in owner and not state.done(task_hash)]
    for name, task_hash, _ in tasks:
        owner.setdefault(task_hash, case.name)
    return {"group": case.group, "tasks": {name: {"hash": h, "calls": calls} for name, h, calls in tasks},
            "new": new, "own": None if new else [], "trials": 0,
            "status": "not tuned yet" if new else "nothing new: all shared"}


def plan_sessions(cases: list[TuneCase], rows: dict) -> list[list[TuneCase]]:
    """Tuning sessions: the kernel cases with new tasks side by side (one for LUT, one for dense),
    then one per other case with new tasks."""
    todo = [case for case in cases if rows[case.name]["new"]]
    sessions = []
    for lut in (True, False):
        batch = [case for case in todo if case.group == "kernels" and case.lut == lut]
        if batch:
            sessions.append(batch)
    return sessions + [[case] for case in todo if case.group != "kernels"]


def run_session(cases: list[TuneCase], args, tvm_target, state: TunedState, rows: dict, owner: dict,
                deadline: Deadline):
    """Tune the new tasks of ``cases`` in one ``tune_model`` call; returns ``(interrupted, cases
    to tune on their own)`` (left out of the side-by-side model, or their tasks not reproduced)."""
    from lut_tvm.tuning.tune import tune_model  # pylint: disable=import-outside-toplevel

    start = time.perf_counter()
    model, plan, examples, together = session_inputs(cases)
    tasks = model_tasks(model, plan, examples, tvm_target)
    present = {task_hash for _, task_hash, _ in tasks}
    apart = [case for case in cases if case not in together or len(cases) > 1 and not all(
        rows[case.name]["tasks"][name]["hash"] in present for name in rows[case.name]["new"])]
    cases = [case for case in cases if case not in apart]
    wanted_hashes = {rows[c.name]["tasks"][name]["hash"] for c in cases for name in rows[c.name]["new"]}
    names = [name for name, task_hash, _ in tasks if task_hash in wanted_hashes]
    if not names:
        return False, apart
    watch = SessionWatch(deadline)
    result = tune_model(model, plan, args.target, args.trials, log_dir=args.log_dir, example_inputs=examples,
                        task_filter=None if len(names) == len(tasks) else names, on_measure=watch,
                        exact_task_names=True)
    interrupted = result.interrupted and not watch.stalled
    hashes = {name: task_hash for name, task_hash, _ in tasks}
    for task in result.tasks:
        task_hash = hashes[task.name]
        previous = state.tasks.get(task_hash, {})
        state.tasks[task_hash] = {
            "name": task.name, "kind": task.kind, "case": owner.get(task_hash, "?"),
            "default_us": _us(task.default_sec), "tuned_us": _us(task.tuned_sec), "trials": task.trials,
            "complete": previous.get("complete", False) or not interrupted}
    wall = round(time.perf_counter() - start, 1)
    label = cases[0].name if len(cases) == 1 else f"{len(cases)} kernel cases side by side"
    for case in cases:
        row = rows[case.name]
        row.update(status="interrupted" if interrupted else "tuned", wall_s=wall, session=label, own=row["new"],
                   trials=sum(state.tasks.get(row["tasks"][name]["hash"], {}).get("trials", 0)
                              for name in row["new"]))
        state.cases[case.name] = row
    return interrupted, apart


def _us(seconds):
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
             "Latencies are MetaSchedule's runner times on this machine (2 cores shared with other jobs: "
             "noisy), each task's mean weighted by its calls in the model, summed over the case's tasks "
             "(a task shared with an earlier case counts with the times measured there). "
             "default = the default schedule rules, tuned = the log's best record.", "", "## Runs", ""]
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


def select_cases(args, work: Path, progress) -> list[TuneCase]:
    cases = []
    for group, folder in prepared_folders(args, work, progress):
        cases += folder_cases(group, folder)
    if args.only in (None, "demo"):
        cases += demo_cases()
    return [case for case in cases if wanted(case.name, args.cases)]


def print_dry_run(rows: dict, sessions: list) -> None:
    print(f"{'case':<58}{'tasks':>6}{'new':>6}")
    for name, row in rows.items():
        print(f"{name[:57]:<58}{len(row['tasks']):>6}{len(row['new']):>6}")
    print(f"{sum(len(r['new']) for r in rows.values())} distinct tasks to tune in {len(rows)} cases "
          f"({sum(len(r['tasks']) for r in rows.values())} task uses); {len(sessions)} tuning sessions: "
          + ", ".join(f"{len(cases)} cases" if len(cases) > 1 else cases[0].name for cases in sessions))


def extract_rows(cases, tvm_target, state: TunedState, progress) -> tuple[dict, dict]:
    """``(rows, owner)``: every case's row (``case_row``) and, per task hash, the case that tunes it.
    A case tuned in an earlier run whose tasks did not change keeps its row."""
    from benchmarks.common.peers import failure_text  # pylint: disable=import-outside-toplevel

    rows, owner = {}, {}
    bar = progress(cases, desc="cases: extracting tasks", unit="case")
    for case in bar:
        bar.set_postfix_str(case.name[-40:])
        try:
            row = case_row(case, tvm_target, owner, state)
        except Exception as err:  # pylint: disable=broad-except
            bar.write(f"{case.name}: failed, left out: {failure_text(err)}")
            continue
        previous = state.cases.get(case.name)
        if not row["new"] and previous and previous["status"] == "tuned" and previous["tasks"] == row["tasks"]:
            row = {**previous, "new": []}  # as tuned then; nothing to do now
        rows[case.name] = state.cases[case.name] = row
    return rows, owner


def tune_sessions(sessions, args, tvm_target, state: TunedState, rows: dict, owner: dict, progress,
                  deadline: Deadline) -> bool:
    """Run the sessions in order (cases a side-by-side session leaves out run next; one that fails
    is split into one session per case); saves the state after each; True when interrupted."""
    from benchmarks.common.peers import failure_text  # pylint: disable=import-outside-toplevel

    bar = progress(total=sum(len(cases) for cases in sessions), desc="cases: tuning", unit="case")
    while sessions:
        if deadline.passed:
            bar.write(f"--max-minutes reached: {sum(len(cases) for cases in sessions)} cases left untuned")
            return True
        cases = sessions.pop(0)
        bar.set_postfix_str(cases[0].name[-40:] if len(cases) == 1 else f"{len(cases)} kernel cases side by side")
        try:
            stopped, apart = run_session(cases, args, tvm_target, state, rows, owner, deadline)
        except Exception as err:  # pylint: disable=broad-except
            bar.write(f"{len(cases)} cases side by side failed, tuning them one by one: {failure_text(err)}"
                      if len(cases) > 1 else f"{cases[0].name}: failed, left out: {failure_text(err)}")
            stopped, apart = False, cases if len(cases) > 1 else []
            if len(cases) == 1:
                rows[cases[0].name]["status"] = f"failed: {failure_text(err)}"
        # Left out of a batch: again side by side while that shrinks the batch, else one by one.
        sessions[:0] = [apart] if 1 < len(apart) < len(cases) else [[case] for case in apart]
        bar.update(len(cases) - len(apart))
        state.save()
        if stopped:
            return True
    bar.close()
    return False


def main(argv=None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    import warnings  # pylint: disable=import-outside-toplevel

    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

    from lut_tvm.targets import resolve_target  # pylint: disable=import-outside-toplevel
    from lut_tvm.tuning import keys  # pylint: disable=import-outside-toplevel

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.log_dir = args.log_dir or keys.default_log_dir()
    tvm_target = resolve_target(args.target)
    log_path = keys.log_path(args.log_dir, tvm_target)
    state = TunedState(log_path.parent / STATE_FILE, log_path.name)
    start, load_start, deadline = time.time(), round(os.getloadavg()[0], 2), Deadline(args.max_minutes)
    progress = functools.partial(tqdm, file=sys.stderr)
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="tune_logs_") as tmp:
        try:
            cases = select_cases(args, args.work or Path(tmp), progress)
            rows, owner = extract_rows(cases, tvm_target, state, progress)
            sessions = plan_sessions([case for case in cases if case.name in rows], rows)
            if args.dry_run:
                print_dry_run(rows, sessions)
                return 0
            interrupted = tune_sessions(sessions, args, tvm_target, state, rows, owner, progress, deadline)
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        print("interrupted: every record measured so far is kept", file=sys.stderr)
    command = " ".join(["python -m scripts.tune_logs", *(argv if argv is not None else sys.argv[1:])])
    state.runs.append({"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command, "trials": args.trials,
                       "wall_s": round(time.time() - start, 1), "load_start": load_start,
                       "load_end": round(os.getloadavg()[0], 2), "interrupted": interrupted})
    state.save()
    if args.prune and (log_path / keys.RECORD_FILE).is_file():
        print(f"pruned {log_path} to {prune_in_place(log_path)} records (the best per workload)")
    report = render_report(state, keys.device_name(tvm_target), log_path)
    from lut_tvm.files import write_text_atomic  # pylint: disable=import-outside-toplevel

    write_text_atomic(log_path.parent / REPORT_FILE, report)
    print(report)
    print(f"wrote {log_path.parent / REPORT_FILE} and {state.path}; records in {log_path}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
