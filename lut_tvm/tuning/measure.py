"""Builder and runner for tuning: lean builds, code-safe inputs, worker processes reaped."""

from __future__ import annotations

import functools
import os
import signal

from tvm.ir.utils import derived_object

from .. import _tvm_compat
from .worker_fns import alloc_arguments, build_lean, warm_up

ms = _tvm_compat.meta_schedule()
PopenPoolExecutor, StatusKind = _tvm_compat.popen_pool()
_build_worker = ms.builder.local_builder._worker_func  # pylint: disable=protected-access


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
    if func.attrs is not None and "lut_tvm.kind" in func.attrs:
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
class LutRunner(ms.runner.LocalRunner._cls):  # pylint: disable=protected-access
    """LocalRunner whose argument allocator keeps every index input (codes) in range."""

    def __init__(self, bounds: dict[str, list], **kwargs):
        super().__init__(**kwargs)
        self.bounds = bounds

    def _sanity_check(self) -> None:
        # The stock check waits for the worker to import TVM; warm it up in the background.
        self.pool.submit(warm_up)

    def run(self, runner_inputs):
        results = []
        for runner_input in runner_inputs:
            bounds = self.bounds.get(args_key(runner_input.args_info))
            self.f_alloc_argument = functools.partial(alloc_arguments, bounds)
            results.extend(super().run([runner_input]))
        return results


@derived_object
class LutBuilder(ms.builder.LocalBuilder._cls):  # pylint: disable=protected-access
    """LocalBuilder with ``build_lean`` and one pool kept for the whole run.

    The stock builder starts fresh workers for every batch; each pays TVM's import (10-20 s on
    a loaded two-core box), which dominates a short run. Workers here are recycled after
    ``MAX_USES`` builds instead (the reason upstream restarts them is a slow memory leak).
    """

    MAX_USES = 64

    def __init__(self, f_export=None, **kwargs):
        self._pool = None
        super().__init__(f_build=build_lean, f_export=f_export, **kwargs)

    def _get_pool(self):
        if self._pool is None:
            self._pool = PopenPoolExecutor(max_workers=self.max_workers, timeout=self.timeout_sec,
                                           initializer=self.initializer,
                                           maximum_process_uses=self.MAX_USES)
        return self._pool

    def _sanity_check(self) -> None:
        # Warm the workers up (TVM import) while the main process prepares the tasks.
        pool = self._get_pool()
        for _ in range(self.max_workers):
            pool.submit(warm_up)

    def build(self, build_inputs):
        results = []
        jobs = [(self.f_build, self.f_export, b.mod, b.target, None) for b in build_inputs]
        for item in self._get_pool().map_with_error_catching(lambda x: _build_worker(*x), jobs):
            if item.status == StatusKind.COMPLETE:
                results.append(ms.builder.BuilderResult(item.value, None))
            elif item.status == StatusKind.TIMEOUT:
                results.append(ms.builder.BuilderResult(
                    None, f"LutBuilder: timeout, killed after {self.timeout_sec} seconds"))
            else:
                results.append(ms.builder.BuilderResult(
                    None, "LutBuilder: an exception occurred\n" + str(item.value)))
        return results

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


def make_builder(max_workers: int | None = None, timeout_sec: float = 60.0, f_export=None):
    """A LutBuilder (the default build times out importing every GPU tensor intrinsic);
    ``f_export(module) -> path`` writes each candidate (default: a ``.tar`` for this machine)."""
    return LutBuilder(max_workers=max_workers or os.cpu_count(), timeout_sec=timeout_sec,
                      f_export=f_export)


def make_runner(bounds: dict[str, list], timeout_sec: float = 30.0, number: int = 3,
                min_repeat_ms: int = 50):
    """A LutRunner (one worker) timing each candidate ``number`` runs, at least ``min_repeat_ms``."""
    config = ms.runner.EvaluatorConfig(number=number, repeat=1, min_repeat_ms=min_repeat_ms,
                                       enable_cpu_cache_flush=False)
    return LutRunner(bounds, timeout_sec=timeout_sec, evaluator_config=config,
                     f_alloc_argument=functools.partial(alloc_arguments, None))


def reap_workers() -> int:
    """SIGKILL the builder/runner workers this process started; returns how many there were."""
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
    return len(pids)
