"""Tuning sessions: each case's tasks (new or shared), the sessions that tune the new ones (kernel
cases side by side), running them with ``lut_tvm.tuning.tune_model`` under a deadline."""

from __future__ import annotations

import time

from .cases import TuneCase, session_inputs
from .state import TunedState, to_us


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
            "default_us": to_us(task.default_sec), "tuned_us": to_us(task.tuned_sec), "trials": task.trials,
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



def extract_rows(cases, tvm_target, state: TunedState, progress) -> tuple[dict, dict]:
    """``(rows, owner)``: every case's row (``case_row``) and, per task hash, the case that tunes it.
    A case tuned in an earlier run whose tasks did not change keeps its row."""
    from benchmarks.common.peers import failure_text  # pylint: disable=import-outside-toplevel

    rows, owner = {}, {}
    with progress.counter("cases: extracting tasks", len(cases), "case") as count:
        for case in cases:
            count.status(case.name[-40:])
            try:
                row = case_row(case, tvm_target, owner, state)
            except Exception as err:  # pylint: disable=broad-except
                progress.say(f"{case.name}: failed, left out: {failure_text(err)}")
                continue
            finally:
                count.update()
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

    with progress.counter("cases: tuning", sum(len(cases) for cases in sessions), "case") as count:
        while sessions:
            if deadline.passed:
                progress.say(f"--max-minutes reached: {sum(len(cases) for cases in sessions)} cases left untuned")
                return True
            cases = sessions.pop(0)
            count.status(cases[0].name[-40:] if len(cases) == 1 else f"{len(cases)} kernel cases side by side")
            try:
                stopped, apart = run_session(cases, args, tvm_target, state, rows, owner, deadline)
            except Exception as err:  # pylint: disable=broad-except
                progress.say(f"{len(cases)} cases side by side failed, tuning them one by one: {failure_text(err)}"
                             if len(cases) > 1 else f"{cases[0].name}: failed, left out: {failure_text(err)}")
                stopped, apart = False, cases if len(cases) > 1 else []
                if len(cases) == 1:
                    rows[cases[0].name]["status"] = f"failed: {failure_text(err)}"
            # Left out of a batch: again side by side while that shrinks the batch, else one by one.
            sessions[:0] = [apart] if 1 < len(apart) < len(cases) else [[case] for case in apart]
            count.update(len(cases) - len(apart))
            state.save()
            if stopped:
                return True
    return False
