"""Timers shared by the speed benchmarks: medians of repeated runs, interleaved across frameworks.

Every figure is a median: of ``repeat`` samples, each the mean of ``number`` back-to-back calls.
``interleaved_medians`` takes one sample of each framework in turn, round after round, so that
background load on a shared machine hits all of them alike; a short pause before each block lets
the previous framework's spinning worker threads (PyTorch's OpenMP, ONNX Runtime's pool) go idle.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict

PAUSE_S = 0.05  # before each block when several threads run: let other pools' spinning workers sleep


def median_call_seconds(fn, number: int, repeat: int) -> float:
    """Median over ``repeat`` samples of the mean seconds of ``number`` calls (``number`` warm-up calls first)."""
    for _ in range(number):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def calls_per_sample(fn, min_sample_s: float, probe_s: float = 0.05) -> int:
    """How many calls of ``fn`` make a sample of at least ``min_sample_s`` (``fn`` runs ~``probe_s`` to find out)."""
    fn()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < probe_s:
        fn()
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    return max(1, int(min_sample_s / per_call + 0.5))


def calibrated_median(fn, min_seconds: float = 0.3, repeat: int = 7) -> float:
    """Median seconds per call over ``repeat`` samples, all of them together about ``min_seconds``."""
    return median_call_seconds(fn, calls_per_sample(fn, min_seconds / repeat), repeat)


def time_evaluator_median(mod, args, number: int, repeat: int, func: str = "main") -> float:
    """Median seconds per call from TVM's ``time_evaluator`` (``repeat`` samples of ``number`` calls)."""
    import tvm  # pylint: disable=import-outside-toplevel

    evaluator = mod.time_evaluator(func, tvm.cpu(), number=number, repeat=repeat)
    return statistics.median(evaluator(*args).results)


def interleaved_samples(fns: dict, rounds: int, number: dict | int, pause_s: float = 0.0) -> dict:
    """``{name: [seconds per call, one per round]}``: each round runs a block of ``number[name]``
    calls of every function in turn, after a pause of ``pause_s``; one warm-up call before each block."""
    samples: dict = defaultdict(list)
    for _ in range(rounds):
        for name, fn in fns.items():
            calls = number if isinstance(number, int) else number[name]
            if pause_s:
                time.sleep(pause_s)
            fn()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
    return dict(samples)


def vm_kernel_times(vm, args, repeat: int) -> dict[str, float]:
    """Median per-run milliseconds of every function a Relax VM calls, from its instrument hook
    (times summed per function within one run; one uninstrumented warm-up run first)."""
    runs: list[dict] = []
    current: dict = defaultdict(float)
    started: dict = {}

    def instrument(_func, name, before_run, _ret, *_args):
        if before_run:
            started[name] = time.perf_counter()
        else:
            current[name] += time.perf_counter() - started.pop(name)
        return 0

    vm["main"](*args)
    vm.set_instrument(instrument)
    try:
        for _ in range(repeat):
            current.clear()
            vm["main"](*args)
            runs.append(dict(current))
    finally:
        vm.set_instrument(None)
    names = {name for run in runs for name in run}
    return {name: statistics.median([run.get(name, 0.0) for run in runs]) * 1e3 for name in names}
