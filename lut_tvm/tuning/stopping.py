"""Stopping a tuning run: what the builder, runner, search and measure callback share (the stop
request, and the ``lut_tvm.steps`` counter they advance: this module draws nothing itself), and
Ctrl-C / SIGTERM as a fast, clean stop.

A stop request (Ctrl-C, SIGTERM, an ``on_measure`` hook's KeyboardInterrupt, a lost device)
makes the builder and runner cancel their queued work and kill their worker processes, the
search hand out no more candidates and the cost model stop training, so the scheduler winds down
within seconds; every candidate measured before the stop is committed to the log, none that was
cut short is. A second signal, or one before measuring starts, aborts at once.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from contextlib import contextmanager

from tvm.ir.utils import derived_object

from .. import _tvm_compat

ms = _tvm_compat.meta_schedule()
LOG = logging.getLogger("lut_tvm.tuning")

# The error of every build or measurement the stop cut short: such results are not committed.
STOPPED = "not measured: tuning was stopped"


class StopRequest:
    """``requested``: wind down now, keeping what was measured; ``aborted``: a second signal (or
    one before ``graceful`` was set, when there is nothing to keep) raised KeyboardInterrupt."""

    def __init__(self):
        self.requested = False
        self.aborted = False
        self.graceful = False  # set once measuring starts
        self.interruptible = False  # inside a step that a stop may cut short (``StopNow``)


class StopNow(Exception):
    """Raised by the signal handler inside a step marked ``StopRequest.interruptible`` (the cost
    model's training: seconds of XGBoost rounds not worth finishing once stopping)."""


class TuneStatus:
    """Shared by the builder, runner, search and callback: the stop request, the progress
    counter of the current phase (a ``lut_tvm.steps.Counter`` or None) and the task being searched."""

    def __init__(self, stop: StopRequest | None = None):
        self.stop = stop or StopRequest()
        self.counter = None
        self.task = ""

    def phase(self, text: str) -> None:
        if self.counter is not None:
            self.counter.status(f"{self.task}: {text}" if self.task else text)

    def advance(self, n: int = 1) -> None:
        if self.counter is not None and n:
            self.counter.update(n)


@contextmanager
def interrupt_handlers(stop: StopRequest):
    """While tuning: the first Ctrl-C / SIGTERM requests a stop (``StopRequest``), a second one
    aborts; before ``stop.graceful`` (nothing measured yet) the first one aborts. Outside the
    main thread nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum, frame):  # pylint: disable=unused-argument
        if stop.requested or not stop.graceful:
            stop.requested = stop.aborted = True
            raise KeyboardInterrupt
        stop.requested = True
        again = "Ctrl-C" if signum == signal.SIGINT else "the signal"
        LOG.warning("stopping: keeping the records measured so far (%s again to abort at once)",
                    again)
        if stop.interruptible:
            raise StopNow

    previous = (signal.signal(signal.SIGINT, on_signal), signal.signal(signal.SIGTERM, on_signal))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def stopped(result) -> bool:
    """Whether a builder/runner result is one the stop cut short."""
    return result.error_msg is not None and str(result.error_msg).startswith(STOPPED)


@derived_object
class RecordCallback(ms.measure_callback.PyMeasureCallback):
    """The measure callback of a tuning run, in place of MetaSchedule's default three: commits
    each measured candidate to ``database`` (a failed one with 1e10 s, as upstream does; one the
    stop cut short not at all), removes the build artifacts, updates the cost model (not once
    stopping), keeps this run's best time and trial count per task, calls ``hook(task_id,
    n_measured)``."""

    def __init__(self, database, status: TuneStatus, hook=None):
        super().__init__()
        self.database = database
        self.status = status
        self.hook = hook
        self.measured = 0
        self.best: dict[int, float] = {}  # task id -> best mean seconds measured in this run
        self.trials: dict[int, int] = {}
        self.remove_artifacts = ms.measure_callback.RemoveBuildArtifact()
        self.update_cost_model = ms.measure_callback.UpdateCostModel()

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        ctx = task_scheduler.tasks_[task_id].ctx
        workload = self.database.commit_workload(ctx.mod)
        count = 0
        for candidate, result in zip(measure_candidates, runner_results):
            if stopped(result):
                continue
            secs = [float(s) for s in result.run_secs] if result.run_secs is not None else []
            self.database.commit_tuning_record(ms.database.TuningRecord(
                candidate.sch.trace, workload, secs or [1e10], ctx.target, candidate.args_info))
            count += 1
            if secs:
                self.best[task_id] = min(self.best.get(task_id, math.inf), sum(secs) / len(secs))
        self.trials[task_id] = self.trials.get(task_id, 0) + count
        self.measured += count
        self.remove_artifacts.apply(task_scheduler, task_id, measure_candidates, builder_results,
                                    runner_results)
        if not self.status.stop.requested:
            self.update_cost_model.apply(task_scheduler, task_id, measure_candidates,
                                         builder_results, runner_results)
        if self.hook is not None and not self.status.stop.requested:
            try:
                self.hook(task_id, self.measured)
            except KeyboardInterrupt:
                self.status.stop.requested = True


@derived_object
class StoppableSearch(ms.search_strategy.PySearchStrategy):
    """A search strategy (``inner``, e.g. EvolutionarySearch) that hands out no more candidates
    once a stop is requested, also cutting a search in progress short (``StoppableXGBModel``)."""

    def __init__(self, inner, status: TuneStatus, task_name: str = ""):
        self.inner = inner
        self.status = status
        self.task_name = task_name

    def _initialize_with_tune_context(self, context) -> None:
        self.task_name = str(context.task_name)
        self.inner._initialize_with_tune_context(context)  # pylint: disable=protected-access

    def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None,
                   cost_model=None) -> None:
        self.inner.pre_tuning(max_trials, num_trials_per_iter, design_spaces, database, cost_model)

    def post_tuning(self) -> None:
        self.inner.post_tuning()

    def generate_measure_candidates(self):
        stop = self.status.stop
        if stop.requested:
            return None
        self.status.task = self.task_name
        self.status.phase("searching")
        try:
            return self.inner.generate_measure_candidates()
        except Exception:  # pylint: disable=broad-except
            if stop.requested and not stop.aborted:  # the cost model refused to predict
                return None
            raise

    def notify_runner_results(self, measure_candidates, results) -> None:
        self.inner.notify_runner_results(measure_candidates, results)

    def clone(self):
        return StoppableSearch(self.inner.clone(), self.status, self.task_name)


class StopSearch(RuntimeError):
    """Raised by ``StoppableXGBModel.predict`` once a stop is requested."""


@derived_object
class StoppableXGBModel(_tvm_compat.subclassable(ms.cost_model.XGBModel)):
    """MetaSchedule's XGBoost cost model that stops predicting (ending a search in progress) and
    training once a stop is requested."""

    def __init__(self, stop: StopRequest, **kwargs):
        super().__init__(**kwargs)
        self.stop = stop

    def predict(self, context, candidates):
        if self.stop.requested:
            raise StopSearch("tuning was stopped")
        return super().predict(context, candidates)

    def update(self, context, candidates, results) -> None:
        if self.stop.requested:
            return
        self.stop.interruptible = True
        try:
            super().update(context, candidates, results)
        except StopNow:  # the model is not used again
            pass
        finally:
            self.stop.interruptible = False
