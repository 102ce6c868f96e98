"""Builder and runner for tuning: lean builds, code-safe inputs, a stop honoured within a
fraction of a second, worker processes reaped."""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import signal
import subprocess
import time

from tvm.ir.utils import derived_object

from schedules.attrs import LUT_KIND_ATTR

from .. import _tvm_compat
from .stopping import STOPPED, TuneStatus
from .worker_fns import alloc_arguments, build_lean, ignore_sigint, warm_up

ms = _tvm_compat.meta_schedule()
PopenPoolExecutor, _ = _tvm_compat.popen_pool()
_build_worker, _run_worker = _tvm_compat.local_worker_functions()
LOG = logging.getLogger("lut_tvm.tuning")
POLL = 0.2  # seconds between looks at the stop request while waiting for workers


def worker_pool(max_workers: int, timeout: float | None, maximum_uses: int | None = None):
    """A PopenPoolExecutor whose workers ignore Ctrl-C (the terminal sends it to them too; the
    main process stops them) and whose stderr is dropped unless lut_tvm.tuning logs DEBUG."""
    quiet = not LOG.isEnabledFor(logging.DEBUG)
    return PopenPoolExecutor(max_workers=max_workers, timeout=timeout, initializer=ignore_sigint,
                             maximum_process_uses=maximum_uses,
                             stderr=subprocess.DEVNULL if quiet else None)


def wait_or_stop(futures, status: TuneStatus, kill) -> bool:
    """Wait for ``futures``; if a stop is requested meanwhile, cancel the queued ones, ``kill()``
    the workers and return False at once (the others are then left to fail)."""
    pending = {future for future in futures if not future.done()}
    while pending:
        if status.stop.requested:
            for future in pending:
                future.cancel()
            kill()
            return False
        _, pending = concurrent.futures.wait(pending, timeout=POLL)
    return True


def _loaded(expr) -> set:
    """Names of buffers read anywhere inside ``expr``."""
    names = set()
    for node in _tvm_compat.walk_tir(expr):
        access = _tvm_compat.buffer_access(node)
        if access is not None and access[2] is None:
            names.add(str(access[0].name))
    return names


def index_bounds(func) -> list[int | None]:
    """Per parameter: the exclusive upper bound its values need, when it is used as an index.

    A parameter read inside another buffer's index along axis ``i`` is bounded by that axis's
    extent (a code indexing ``table[c, code, n]`` gets K); a bound on a buffer copied from a
    parameter carries over to the parameter. Unbounded uint8 inputs of LUT kernels (the one-hot
    and shuffle forms compare codes instead of indexing) get the smallest int8 table extent.
    """
    names = [str(p.name) for p in func.params]
    bound: dict[str, int] = {}
    copied_from: dict[str, set] = {}
    dtypes: dict[str, str] = {}
    shapes: dict[str, list[int]] = {}
    for node in _tvm_compat.walk_tir(func.body):
        access = _tvm_compat.buffer_access(node)
        if access is None:
            continue
        buf, indices, stored = access
        name = str(buf.name)
        dtypes[name] = str(buf.dtype)
        shapes[name] = [int(s) if isinstance(s, int) or hasattr(s, "value") else -1 for s in buf.shape]
        for axis, index in enumerate(indices):
            extent = shapes[name][axis] if axis < len(shapes[name]) else -1
            if extent <= 0:
                continue
            for source in _loaded(index):
                bound[source] = min(bound.get(source, extent), extent)
        if stored is not None:
            copied_from.setdefault(name, set()).update(_loaded(stored))
    for name, high in list(bound.items()):
        for source in copied_from.get(name, ()):
            bound[source] = min(bound.get(source, high), high)
    if func.attrs is not None and LUT_KIND_ATTR in func.attrs:
        tables = [min(shapes[n]) for n in names if dtypes.get(n) == "int8" and shapes.get(n)]
        for name in names:
            if dtypes.get(name) == "uint8" and name not in bound and tables:
                bound[name] = min(tables)
    result = []
    for name in names:
        dtype = dtypes.get(name, "")
        result.append(bound.get(name) if dtype.startswith(("int", "uint")) else None)
    return result


def args_key(args_info) -> str:
    """A hashable description of a task's arguments (dtypes and shapes)."""
    return "|".join(str(info.as_json()) for info in args_info)


def task_bounds(task_mods) -> dict[str, list]:
    """``args_key -> index_bounds`` over the tasks (the tighter bound wins on a shared key)."""
    table: dict[str, list] = {}
    for mod in task_mods:
        key = args_key(ms.arg_info.ArgInfo.from_entry_func(mod, remove_preproc=True))
        new = index_bounds(mod["main"])
        old = table.get(key)
        table[key] = new if old is None else [
            b if a is None else a if b is None else min(a, b) for a, b in zip(old, new)
        ]
    return table


@derived_object
class LutRunner(_tvm_compat.subclassable(ms.runner.LocalRunner)):
    """LocalRunner whose argument allocator keeps every index input (codes) in range, and
    which stops at once (killing its worker) on a stop request."""

    def __init__(self, bounds: dict[str, list], status: TuneStatus | None = None, **kwargs):
        super().__init__(**kwargs)
        self.bounds = bounds
        self.status = status or TuneStatus()

    def _sanity_check(self) -> None:
        # Our pool (workers ignore Ctrl-C); the stock check waits for the worker to import TVM:
        # warm it up in the background instead.
        self.pool = worker_pool(1, self.timeout_sec)
        self.pool.submit(warm_up)

    def kill(self) -> None:
        """Stop the worker process now."""
        self.pool.shutdown(wait=False)

    def run(self, runner_inputs):
        results = []
        for index, runner_input in enumerate(runner_inputs):
            if self.status.stop.requested:
                results.append(ms.runner.LocalRunnerFuture(error_message=STOPPED))
                continue
            if len(runner_inputs) > 1:
                self.status.phase(f"timing {index + 1}/{len(runner_inputs)}")
            bounds = self.bounds.get(args_key(runner_input.args_info))
            future = self.pool.submit(
                _run_worker, functools.partial(alloc_arguments, bounds), self.f_run_evaluator,
                self.f_cleanup, self.evaluator_config, self.alloc_repeat,
                str(runner_input.artifact_path), str(runner_input.device_type),
                tuple(info.as_json() for info in runner_input.args_info))
            if not wait_or_stop([future], self.status, self.kill):
                results.append(ms.runner.LocalRunnerFuture(error_message=STOPPED))
                continue
            secs, error = None, None
            try:
                secs = future.result()
            except TimeoutError:
                error = f"LutRunner: timeout, killed after {self.timeout_sec} seconds"
            except Exception as err:  # pylint: disable=broad-except
                error = f"LutRunner: an exception occurred\n{err}"
            results.append(ms.runner.LocalRunnerFuture(res=secs, error_message=error))
            self.status.advance(1)
        return results


@derived_object
class LutBuilder(_tvm_compat.subclassable(ms.builder.LocalBuilder)):
    """LocalBuilder with ``build_lean`` and one pool kept for the whole run.

    The stock builder starts fresh workers for every batch; each pays TVM's import (10-20 s on
    a loaded two-core box), which dominates a short run. Workers here are recycled after
    ``MAX_USES`` builds instead (the reason upstream restarts them is a slow memory leak).
    """

    MAX_USES = 64

    def __init__(self, f_export=None, status: TuneStatus | None = None, **kwargs):
        self._pool = None
        self.status = status or TuneStatus()
        super().__init__(f_build=build_lean, f_export=f_export, **kwargs)

    def _get_pool(self):
        if self._pool is None:
            self._pool = worker_pool(self.max_workers, self.timeout_sec, self.MAX_USES)
        return self._pool

    def _sanity_check(self) -> None:
        # Warm the workers up (TVM import) while the main process prepares the tasks.
        pool = self._get_pool()
        for _ in range(self.max_workers):
            pool.submit(warm_up)

    def build(self, build_inputs):
        count = len(build_inputs)
        if self.status.stop.requested:
            return [ms.builder.BuilderResult(None, STOPPED) for _ in range(count)]
        if count > 1:
            self.status.phase(f"building {count} candidates")
        pool = self._get_pool()
        futures = [pool.submit(_build_worker, self.f_build, self.f_export, b.mod, b.target, None)
                   for b in build_inputs]
        wait_or_stop(futures, self.status, self.close)
        results = []
        for future in futures:
            if not future.done() or future.cancelled():
                results.append(ms.builder.BuilderResult(None, STOPPED))
                continue
            try:
                results.append(ms.builder.BuilderResult(future.result(), None))
            except TimeoutError:
                results.append(ms.builder.BuilderResult(
                    None, f"LutBuilder: timeout, killed after {self.timeout_sec} seconds"))
            except Exception as err:  # pylint: disable=broad-except
                message = (STOPPED if self.status.stop.requested
                           else "LutBuilder: an exception occurred\n" + str(err))
                results.append(ms.builder.BuilderResult(None, message))
        # A candidate that failed to build is never timed: count it here.
        self.status.advance(sum(1 for r in results
                                if r.error_msg is not None and not str(r.error_msg).startswith(STOPPED)))
        return results

    def close(self) -> None:
        """Stop the worker processes now."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


def make_builder(max_workers: int | None = None, timeout_sec: float = 60.0, f_export=None,
                 status: TuneStatus | None = None):
    """A LutBuilder (the default build times out importing every GPU tensor intrinsic);
    ``f_export(module) -> path`` writes each candidate (default: a ``.tar`` for this machine)."""
    return LutBuilder(max_workers=max_workers or os.cpu_count(), timeout_sec=timeout_sec,
                      f_export=f_export, status=status)


def make_runner(bounds: dict[str, list], timeout_sec: float = 30.0, number: int = 3,
                min_repeat_ms: int = 50, status: TuneStatus | None = None):
    """A LutRunner (one worker) timing each candidate ``number`` runs, at least ``min_repeat_ms``."""
    config = ms.runner.EvaluatorConfig(number=number, repeat=1, min_repeat_ms=min_repeat_ms,
                                       enable_cpu_cache_flush=False)
    return LutRunner(bounds, status, timeout_sec=timeout_sec, evaluator_config=config,
                     f_alloc_argument=functools.partial(alloc_arguments, None))


def reap_workers(settle: float = 0.5) -> int:
    """SIGKILL the builder/runner workers this process started; returns how many there were.

    A pool thread that was handing out work when its worker was killed may start a new one:
    looks again until none has appeared for ``settle`` seconds."""
    total = 0
    deadline = time.monotonic() + settle
    while True:
        pids = _tvm_compat.popen_worker_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass
        total += len(pids)
        if pids:
            deadline = time.monotonic() + settle
        elif time.monotonic() >= deadline:
            return total
        time.sleep(0.05)
