"""Tuning progress and stopping: a measure callback driving tqdm, and Ctrl-C as a clean stop."""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

from tvm.ir.utils import derived_object

from .. import _tvm_compat

ms = _tvm_compat.meta_schedule()
LOG = logging.getLogger("lut_tvm.tuning")


class StopRequest:
    """Set by Ctrl-C / SIGTERM / a hook's KeyboardInterrupt; the callback then ends every task."""

    def __init__(self):
        self.requested = False


@contextmanager
def interrupt_handlers(stop: StopRequest):
    """During tuning: first Ctrl-C stops after the batch in flight (its records are kept), a
    second one or SIGTERM aborts at once. Outside the main thread nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum, frame):  # pylint: disable=unused-argument
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        LOG.warning("stopping after the batch in flight (Ctrl-C again to abort at once)")

    def on_sigterm(signum, frame):  # pylint: disable=unused-argument
        stop.requested = True
        raise KeyboardInterrupt

    previous = (signal.signal(signal.SIGINT, on_sigint), signal.signal(signal.SIGTERM, on_sigterm))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


@derived_object
class ProgressCallback(ms.measure_callback.PyMeasureCallback):
    """Advances ``bar`` per batch, calls ``hook(task_id, n_measured)``, honours ``stop``."""

    def __init__(self, bar, task_names: list[str], stop: StopRequest, hook=None):
        super().__init__()
        self.bar = bar
        self.task_names = task_names
        self.stop = stop
        self.hook = hook
        self.measured = 0

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        count = len(runner_results)
        self.measured += count
        if self.bar is not None:
            self.bar.set_postfix_str(self.task_names[task_id][:32], refresh=False)
            self.bar.update(count)
        if self.hook is not None:
            try:
                self.hook(task_id, self.measured)
            except KeyboardInterrupt:
                self.stop.requested = True
        if self.stop.requested:
            # Ending every task makes the scheduler return normally (no exception crosses TVM's
            # FFI, which would turn KeyboardInterrupt into RuntimeError).
            for index, record in enumerate(task_scheduler.tasks_):
                if not record.is_terminated:
                    task_scheduler.terminate_task(index)
