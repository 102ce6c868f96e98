"""Tune every task of a model (LUT kernels and the remaining dense ops) and write the log."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from schedules.attrs import LUT_KIND_ATTR

from .. import _tvm_compat
from ..files import write_text_atomic
from ..deploy.defaults import EMULATED_NOTE, DeviceError
from ..errors import LutTvmError, TargetError
from . import keys
from .logs import open_database, repair_log
from .measure import make_builder, make_runner, reap_workers, task_bounds
from .stopping import (RecordCallback, StoppableSearch, StoppableXGBModel, StopRequest, TuneStatus,
                       interrupt_handlers, stopped)
from .remote import RemoteDevice, device_target, remote_measurers
from .space import first_rule_schedule, design_space
from ..steps import Progress

ms = _tvm_compat.meta_schedule()
LOG = logging.getLogger("lut_tvm.tuning")


@dataclass
class TaskResult:
    """One task: its name, LUT kind (or ``dense``), and two latencies (s) measured in this run on
    the same machine: the default rules' schedule, and the best schedule of this run (the
    default's own time when no candidate beat it); ``calls`` per model run (its weight)."""

    name: str
    kind: str
    default_sec: float | None
    tuned_sec: float | None
    trials: int = 0
    calls: int = 1

    @property
    def speedup(self) -> float | None:
        """Default latency over tuned latency (> 1: tuning helped)."""
        if not self.default_sec or not self.tuned_sec:
            return None
        return self.default_sec / self.tuned_sec


@dataclass
class TuneResult:
    """What a tuning run did: where the log is, per-task results, whether it was interrupted."""

    log_dir: Path
    tasks: list[TaskResult] = field(default_factory=list)
    interrupted: bool = False
    records: int = 0
    device: str = "this machine"  # where the candidates were timed
    emulated: bool = False  # timed under emulation (qemu): not device performance


def prepare_module(model, plan, tvm_target, example_inputs=None, fast_math: bool = True):
    """The model as ``compile`` schedules it (``compiler.lowered_module``: imported, plan bound,
    LUT-rewritten, legalized) for a Plan, an ExactPlan or a file of either kind."""
    from ..compiler import lowered_module  # pylint: disable=import-outside-toplevel
    from ..frontends import import_model  # pylint: disable=import-outside-toplevel

    return lowered_module(import_model(model, example_inputs), plan, tvm_target, fast_math=fast_math)


def extract_tasks(mod, tvm_target) -> list:
    """One MetaSchedule task per distinct PrimFunc of ``mod`` (LUT kernels first)."""
    tasks = ms.relax_integration.extract_tasks(mod, tvm_target)
    return sorted(tasks, key=lambda t: (_task_kind(t) == "dense", t.task_name))


def _task_kind(task) -> str:
    func = task.dispatched[0]["main"]
    if func.attrs is not None and LUT_KIND_ATTR in func.attrs:
        return str(func.attrs[LUT_KIND_ATTR])
    return "dense"


def _write_key(path: Path, tvm_target, measured_on: dict | None = None) -> None:
    """The key file; ``measured_on`` (a remote device's probe) is kept beside the key fields."""
    path.mkdir(parents=True, exist_ok=True)
    info = (measured_on or {}).get("info") or {}
    key = {**keys.log_key(tvm_target), "device": keys.device_name(tvm_target),
           "num_cores_tuned": info.get("cpu_count", os.cpu_count())}
    if measured_on:
        key["measured_on"] = measured_on["describe"]
        key["emulated"] = measured_on["emulated"]
    write_text_atomic(path / keys.KEY_FILE, json.dumps(key, indent=2) + "\n")


def measure_defaults(tasks, tvm_target, builder, runner, database) -> list[float | None]:
    """Build and time each task's default-rule schedule; commit it as a record (so the log's
    best is never slower than the default rules, as measured)."""
    from schedules.rules import default_rules  # pylint: disable=import-outside-toplevel

    schedules = [first_rule_schedule(t.dispatched[0]["main"], tvm_target, default_rules(), False)
                 for t in tasks]
    ready = [(i, sch) for i, sch in enumerate(schedules) if sch is not None]
    built = builder.build([ms.builder.BuilderInput(sch.mod, tvm_target) for _, sch in ready])
    results: list[float | None] = [None] * len(tasks)
    for (index, sch), build in zip(ready, built):
        if stopped(build):
            continue
        if build.error_msg:
            LOG.warning("default schedule of %s did not build: %s", tasks[index].task_name,
                        build.error_msg.splitlines()[-1] if build.error_msg else "")
            continue
        args_info = ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
        run = runner.run([ms.runner.RunnerInput(build.artifact_path, _device_type(tvm_target),
                                                args_info)])[0].result()
        _remove_artifact(build.artifact_path)
        if stopped(run):
            continue
        if run.error_msg or not run.run_secs:
            LOG.warning("default schedule of %s did not run: %s", tasks[index].task_name,
                        (run.error_msg or "").strip().splitlines()[-1:])
            continue
        secs = [float(s) for s in run.run_secs]
        results[index] = sum(secs) / len(secs)
        workload = database.commit_workload(tasks[index].dispatched[0])
        database.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, workload, secs, tvm_target, args_info))
    return results


def _device_type(tvm_target) -> str:
    return "cpu" if tvm_target.kind.name in ("llvm", "c") else tvm_target.kind.name


def _remove_artifact(path: str) -> None:
    try:
        os.remove(path)
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass


def _search_strategy(trials: int):
    # Small runs get a small population: the default (512 x 4 genetic rounds per batch) costs
    # seconds of cost-model calls per task on two cores, more than a few trials are worth.
    population = int(min(512, max(32, 16 * trials)))
    return ms.search_strategy.EvolutionarySearch(
        population_size=population, init_min_unmeasured=min(50, population // 2),
        genetic_num_iters=4 if trials >= 16 else 1)


def tune_model(model, plan, target="native", trials: int = 32, *, log_dir=None,
               example_inputs=None, progress: bool = True, seed: int = 0,
               task_filter: list[str] | None = None, on_measure=None, remote=None,
               exact_task_names: bool = False, fast_math: bool = True) -> TuneResult:
    """Tune every task of ``model`` (+ ``plan``) for ``target``, ``trials`` measurements per task.

    Records go to ``<log_dir>/<device>/<key>/`` (``log_dir`` defaults to
    ``keys.user_log_dir()``) as they are measured; unreadable lines an earlier killed run left
    there are dropped with a warning. ``task_filter`` keeps only the tasks whose name contains
    one of its strings (equals one, with ``exact_task_names``: ``fused_add1`` then leaves out
    ``fused_add10``). ``progress`` shows each step on stderr (``lut_tvm.steps.Progress``).

    Ctrl-C or SIGTERM (or a KeyboardInterrupt from ``on_measure(task_id, n_measured)``, called
    after each batch) stops the run within seconds with ``interrupted=True``: the candidates
    measured so far are in the log, the worker processes are killed (``stopping.StopRequest``).

    ``plan`` is a Plan, an ExactPlan or a file of either kind; ``fast_math`` must be what the
    model will be compiled with (``compile(fast_math=...)``), since it changes the tasks.

    ``remote`` (a ``lut_tvm.tuning.RemoteDevice``, or ``"HOST:PORT"`` of an RPC server) times
    the candidates on that device, built here for ``target`` (cross-linked); required for a
    target this machine cannot run. A device that stops answering ends the run with a
    DeviceError naming it and the failed step; the records measured before stay in the log.
    """
    from ..targets import is_host_runnable, resolve_target  # pylint: disable=import-outside-toplevel

    start = time.perf_counter()
    tvm_target = resolve_target(target)
    if remote is None and not is_host_runnable(tvm_target):
        raise TargetError(f"this machine cannot run {target!r} code: tune on the device over RPC "
                          "(--tracker HOST:PORT --key KEY, or --rpc HOST:PORT; "
                          "`lut-tvm device start --emulated --tracker` starts an emulated one)")
    if trials < 1:
        raise LutTvmError(f"--trials must be at least 1, got {trials}")
    if isinstance(remote, str):
        remote = RemoteDevice(rpc=remote)
    steps = Progress(enabled=progress)
    measured_on = None
    if remote is not None:
        with steps.step(f"connecting to {remote.name}"):
            measured_on = remote.probe(tvm_target)
        tvm_target = device_target(tvm_target, measured_on)
        if measured_on["emulated"]:
            LOG.warning("measuring on %s", measured_on["describe"])  # says it is emulated
    _tvm_compat.import_cpu_tensor_intrinsics(tvm_target)
    path = keys.log_path(log_dir or keys.user_log_dir(), tvm_target)
    builder = runner = watch = callback = None
    status = TuneStatus(StopRequest())
    stop = status.stop
    tasks: list = []
    defaults: list[float | None] = []
    try:
        with interrupt_handlers(stop), steps.logs_above_bars():
            # Workers start (and import TVM) while the model is imported and rewritten.
            bounds: dict[str, list] = {}
            with steps.step("importing the model and extracting its tuning tasks"):
                if remote is None:
                    builder = make_builder(status=status)
                    runner = make_runner(bounds, status=status)
                else:
                    builder, runner, watch = remote_measurers(remote, tvm_target, bounds, status,
                                                              measured_on["emulated"])
                mod = prepare_module(model, plan, tvm_target, example_inputs, fast_math)
                tasks = [t for t in extract_tasks(mod, tvm_target)
                         if not task_filter or (t.task_name in task_filter if exact_task_names
                                                else any(p in t.task_name for p in task_filter))]
            if not tasks:
                raise LutTvmError(f"no task of the model matches {task_filter}")
            _write_key(path, tvm_target, measured_on)
            repair_log(path)
            database = open_database(path)
            bounds.update(task_bounds([t.dispatched[0] for t in tasks]))
            _tvm_compat.register_missing_custom_rules([t.dispatched[0]["main"] for t in tasks],
                                                      tvm_target)
            LOG.info("%d tasks ready after %.1f s", len(tasks), time.perf_counter() - start)
            stop.graceful = True  # from here on, a stop keeps what was measured
            defaults = [None] * len(tasks)
            with steps.counter("measuring the default schedules", len(tasks), "task") as count:
                status.counter = count
                defaults = measure_defaults(tasks, tvm_target, builder, runner, database)
            LOG.info("default schedules measured after %.1f s", time.perf_counter() - start)
            callback = RecordCallback(database, status, on_measure)
            with steps.counter("tuning", trials * len(tasks), "trial") as count:
                status.counter = count
                if not stop.requested:
                    count.status("generating the design spaces")
                    _tune(tasks, tvm_target, trials, seed, builder, runner, callback, database,
                          status)
            status.counter = None
    except (KeyboardInterrupt, RuntimeError):
        # An abort (a second Ctrl-C, or one before measuring) reaches here as KeyboardInterrupt,
        # or as RuntimeError when it crossed TVM's FFI; any other RuntimeError is a real error.
        if not stop.requested:
            raise
    finally:
        _close(builder, runner)
    if watch is not None and watch.failure is not None:
        raise DeviceError(f"{watch.failure}; the {count_records(path)} records measured before are "
                          f"kept in {path}")
    result = TuneResult(log_dir=path, interrupted=stop.requested)
    if measured_on:
        result.device, result.emulated = measured_on["describe"], measured_on["emulated"]
    if stop.requested:
        LOG.info("tuning interrupted: the records measured so far are kept in %s", path)
    result.tasks = _summarize(tasks, defaults, callback)
    LOG.info("tuning done after %.1f s", time.perf_counter() - start)
    result.records = count_records(path)
    return result


def _tune(tasks, tvm_target, trials, seed, builder, runner, callback, database, status) -> None:
    """MetaSchedule's gradient-based task scheduler over ``tasks``, stoppable (``status``)."""
    contexts = [
        ms.TuneContext(
            mod=task.dispatched[0], target=tvm_target,
            space_generator=design_space(task.dispatched[0]["main"], tvm_target, status.stop),
            search_strategy=StoppableSearch(_search_strategy(trials), status),
            task_name=task.task_name, rand_state=seed + i, num_threads=os.cpu_count() or 1,
        ).clone()
        for i, task in enumerate(tasks)
    ]
    if status.stop.requested:
        return
    ms.task_scheduler.GradientBased(seed=seed).tune(
        tasks=contexts, task_weights=[float(t.weight) for t in tasks],
        max_trials_global=trials * len(tasks), max_trials_per_task=trials,
        num_trials_per_iter=max(1, min(trials, 16)), builder=builder, runner=runner,
        measure_callbacks=[callback], database=database,
        cost_model=StoppableXGBModel(status.stop, num_tuning_cores=os.cpu_count() or 1,
                                     tree_method="auto"),
    )


def _close(builder, runner) -> None:
    """Stop the builder's and runner's workers, then kill any worker of ours still alive."""
    if builder is not None:
        builder.close()
    if runner is not None:
        runner.kill()
    reap_workers()


def _summarize(tasks, defaults, callback) -> list[TaskResult]:
    """Per task: the default schedule's time and this run's best (both measured in this run)."""
    rows = []
    for index, (task, default) in enumerate(zip(tasks, defaults)):
        best = callback.best.get(index) if callback is not None else None
        tuned = min(t for t in (default, best) if t is not None) if default or best else None
        rows.append(TaskResult(task.task_name, _task_kind(task), default, tuned,
                               callback.trials.get(index, 0) if callback is not None else 0,
                               int(task.weight)))
    return rows


def count_records(path: Path) -> int:
    """Lines in the log's record file (one measured schedule each)."""
    file = Path(path) / keys.RECORD_FILE
    if not file.is_file():
        return 0
    with open(file, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def _us(sec) -> str:
    if not sec:
        return "-"
    us = sec * 1e6
    return f"{us:.1f}" if us >= 10 else f"{us:.2f}"


def format_summary(result: TuneResult) -> str:
    """The per-task table: name, kind, default-rule and tuned latency, speedup, trials, calls;
    both latencies were measured in this run, on the same machine."""
    lines = [(f"{'task':<36}{'kind':<22}{'default us':>12}{'tuned us':>12}{'speedup':>9}"
              f"{'trials':>8}{'calls':>7}")]
    total_default = total_tuned = 0.0
    for row in result.tasks:
        speed = f"{row.speedup:.2f}x" if row.speedup else "-"
        lines.append(f"{row.name[:35]:<36}{row.kind[:21]:<22}{_us(row.default_sec):>12}"
                     f"{_us(row.tuned_sec):>12}{speed:>9}{row.trials:>8}{row.calls:>7}")
        if row.default_sec and row.tuned_sec:
            total_default += row.default_sec * row.calls
            total_tuned += row.tuned_sec * row.calls
    if total_tuned:
        lines.append(f"{'all tasks x calls':<58}{_us(total_default):>12}{_us(total_tuned):>12}"
                     f"{total_default / total_tuned:>8.2f}x")
    lines.append(f"default: the default rules' schedule; tuned: the best schedule this run measured "
                 f"(the default's time if none beat it); both timed in this run on {result.device}")
    if result.emulated:
        lines.append(f"note: {EMULATED_NOTE} -- these times rank candidates of the device's code; "
                     "they are not its speed")
    return "\n".join(lines)


def prune_log(source: Path, destination: Path) -> int:
    """Copy the log in ``source`` to ``destination`` keeping only each workload's best record
    (what gets shipped in ``tuning_logs/``); returns the records kept."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in (keys.WORKLOAD_FILE, keys.RECORD_FILE):
        (destination / name).unlink(missing_ok=True)
    write_text_atomic(destination / keys.KEY_FILE, (Path(source) / keys.KEY_FILE).read_text())
    open_database(Path(source)).dump_pruned(open_database(destination))
    return count_records(destination)
