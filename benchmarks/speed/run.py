"""Speed benchmark: LUT kernels and whole models vs PyTorch fp32, ONNX Runtime fp32 / int8 and TVM dense.

    python -m benchmarks.speed [--threads 1 2] [--only kernels|models|exact|zoo] [--repeat N] [--quick]
                               [--minilm-v 16 32] [--work DIR] [--out DIR]

Writes ``benchmarks/results/speed.json``, ``speed.md``, ``speed.png`` and ``speed_accuracy.png``
(``--quick``: a subset of cases and tiny repeat counts, numbers meaningless, under
``benchmarks/results/quick/``). Every framework's artifact is built first in this process
(``prepare``, ``kernels``, ``models``; the exact LUT-NA group: ``exact``, ``exact_models``; the
model-zoo group: ``zoo``); then one
worker process per thread count and framework group (PyTorch, each ONNX Runtime session, TVM) times them
(``worker``): TVM's thread count is fixed when its pool starts, and no framework is timed while
another's idle pool spins on the same cores. The workers run side by side and the coordinator
interleaves their rounds (one block of calls per process in turn, the others idle), so that a changing
machine load reaches every framework alike. A peer that ran slower at N threads than at 1 gets no
ratio at N (``scaling.flag_thread_regressions``). ``--work DIR`` keeps the built artifacts there and reuses complete ones next
time (development only: rebuild after changing the compiler).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
ROUNDS = 15  # samples per framework and case (--repeat)
MIN_SAMPLE_S = 0.02  # each sample averages enough calls to last this long
QUICK_ROUNDS, QUICK_MIN_SAMPLE_S = 3, 0.002


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the workers)."""
    import resource  # pylint: disable=import-outside-toplevel

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", choices=("kernels", "models", "exact", "zoo"),
                        help="run one group only (exact: LUT-NA exact-mode kernels and VGG-11; zoo: the ONNX "
                             "model-zoo architectures, dense, with random weights)")
    parser.add_argument("--repeat", type=int, help=f"timed samples per framework and case (default {ROUNDS}, "
                        f"quick {QUICK_ROUNDS}); the tables give their median")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: one kernel per group, digits CNN only, the exact group's linear only, "
                             "tiny repeats; numbers meaningless")
    parser.add_argument("--minilm-v", type=int, nargs="+", default=[16], help="V of MiniLM's LUT plans")
    parser.add_argument("--work", type=Path, help="keep built artifacts here and reuse complete ones")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results[/quick])")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render speed.md and the plots from the speed.json in the results folder")
    args = parser.parse_args(argv)
    if any(t < 1 for t in args.threads):
        parser.error("--threads: thread counts must be >= 1")
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


def select_kernel_cases(quick: bool):
    """All kernel shapes; with ``quick`` one per group (its most repeated 3x3 / linear layer)."""
    from .shapes import kernel_cases  # pylint: disable=import-outside-toplevel

    cases = kernel_cases()
    if not quick:
        return cases
    groups = dict.fromkeys(case.group for case in cases)
    return [max((c for c in cases if c.group == group), key=lambda c: c.count) for group in groups]


def prepare_all(work: Path, args, progress) -> tuple[list[Path], list[str]]:
    """Build every case's artifacts (reusing complete folders); returns the case folders in order
    and the names of those reused from ``work``. ``progress``: a ``lut_tvm.steps.Progress``."""
    from .exact import exact_kernel_cases, prepare_exact_kernel  # pylint: disable=import-outside-toplevel
    from .exact_models import prepare_exact_vgg  # pylint: disable=import-outside-toplevel
    from .kernels import prepare_kernel  # pylint: disable=import-outside-toplevel
    from .models import prepare_digits, prepare_minilm  # pylint: disable=import-outside-toplevel
    from .prepare import read_meta  # pylint: disable=import-outside-toplevel

    jobs = []
    if args.only in (None, "kernels"):
        jobs += [(work / "kernels" / case.key, lambda f, c=case: prepare_kernel(c, f))
                 for case in select_kernel_cases(args.quick)]
    if args.only in (None, "models"):
        jobs.append((work / "models" / "digits_cnn", prepare_digits))
        if not args.quick:
            jobs.append((work / "models" / "minilm", lambda f: prepare_minilm(f, args.minilm_v)))
    if args.only in (None, "exact"):
        exact_cases = exact_kernel_cases()[:1] if args.quick else exact_kernel_cases()
        # "exact-" keeps the keys apart from the LUT-NN kernel cases of the same shape (results are keyed by folder name).
        jobs += [(work / "exact" / f"exact-{case.key}", lambda f, c=case: prepare_exact_kernel(c, f))
                 for case in exact_cases]
        if not args.quick:
            jobs.append((work / "exact" / "vgg11", prepare_exact_vgg))
    if args.only in (None, "zoo"):
        from .zoo import ZOO_MODELS, prepare_zoo  # pylint: disable=import-outside-toplevel

        jobs += [(work / "zoo" / name, lambda f, n=name: prepare_zoo(f, n))
                 for name in (("squeezenet",) if args.quick else ZOO_MODELS)]
    from benchmarks.common.peers import failure_text  # pylint: disable=import-outside-toplevel

    folders, reused = [], []
    with progress.counter("building (export, quantize, plan, compile)", len(jobs), "case") as count:
        for folder, prepare in jobs:
            count.status(folder.name[-32:])
            if read_meta(folder) is not None:
                reused.append(folder.name)
                folders.append(folder)
            else:
                try:
                    prepare(folder)
                    folders.append(folder)
                except Exception as err:  # pylint: disable=broad-except
                    progress.say(f"{folder.name}: could not be prepared, left out: {failure_text(err)}")
            count.update()
    return folders, reused


def start_worker(threads: int, group: str, rounds: int, min_sample_s: float) -> subprocess.Popen:
    """One worker process serving ``group``'s frameworks at ``threads`` threads (``worker.serve``).
    ``TVM_BIND_THREADS=0``: TVM pins its pool's workers to cores by default (ONNX Runtime's and PyTorch's
    threads are not pinned); on a shared machine a pinned worker waits behind whatever else runs on its
    core, and TVM's evenly split parallel loops wait for it."""
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), TVM_BIND_THREADS="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "benchmarks.speed.worker", "--serve", "--group", group, "--threads", str(threads),
           "--rounds", str(rounds), "--min-sample", str(min_sample_s)]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def ask(proc: subprocess.Popen, group: str, command: dict) -> dict:
    """Send one command to a serving worker and return its reply."""
    import json  # pylint: disable=import-outside-toplevel

    proc.stdin.write(json.dumps(command) + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"the {group} timing worker stopped (exit {proc.wait()})")
    return json.loads(line)


def time_all_groups(threads: int, folders: list[Path], rounds: int, min_sample_s: float) -> dict:
    """Every group's worker at ``threads``, each in its own process (no framework beside another's pool),
    all alive at once and their rounds interleaved case by case: group A's block, B's, C's, then A's
    again, so that a changing machine load reaches each framework alike; per-case results merged."""
    from lut_tvm.steps import Progress  # pylint: disable=import-outside-toplevel
    from .scaling import merge_group_timings  # pylint: disable=import-outside-toplevel
    from .worker import GROUPS  # pylint: disable=import-outside-toplevel

    workers = {group: start_worker(threads, group, rounds, min_sample_s) for group in GROUPS}
    records = {group: {"threads": threads, "group": group, "cases": {}} for group in GROUPS}
    progress = Progress()
    try:
        with progress.counter(f"timing, {threads} thread(s)", len(folders), "case") as count:
            for folder in folders:
                count.status(folder.name[-32:])
                for group, proc in workers.items():
                    ask(proc, group, {"case": str(folder)})
                for _ in range(rounds):
                    for group, proc in workers.items():
                        ask(proc, group, {"sample": True})
                for group, proc in workers.items():
                    reply = ask(proc, group, {"result": True})
                    if "result" in reply:
                        records[group]["cases"][folder.name] = reply["result"]
                    elif reply["error"] != "no case":
                        progress.say(f"{folder.name}: {group} timing failed: {reply['error']}")
                count.update()
    finally:
        for proc in workers.values():
            proc.stdin.close()
            proc.wait()
    load = list(os.getloadavg())
    return merge_group_timings([{**record, "loadavg_end": load} for record in records.values()])


def main(argv=None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    import warnings  # pylint: disable=import-outside-toplevel

    from benchmarks.common.machine import library_versions, machine_info, shuffle_peak  # pylint: disable=C0415
    from lut_tvm.steps import Progress  # pylint: disable=import-outside-toplevel
    from .report import write_report  # pylint: disable=import-outside-toplevel

    if args.report_only:
        from .report import read_raw  # pylint: disable=import-outside-toplevel

        out_dir = args.out or (RESULTS / "quick" if args.quick else RESULTS)
        paths = write_report(*read_raw(out_dir / "speed.json"), out_dir)
        print("wrote", ", ".join(str(p) for p in paths))
        return 0
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start, machine = time.time(), machine_info()
    rounds = args.repeat or (QUICK_ROUNDS if args.quick else ROUNDS)
    min_sample_s = QUICK_MIN_SAMPLE_S if args.quick else MIN_SAMPLE_S
    out_dir = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    with tempfile.TemporaryDirectory(prefix="speed_bench_") as tmp:
        work = args.work or Path(tmp)
        folders, reused = prepare_all(work, args, Progress())
        build_s = time.time() - start
        if not folders:
            raise SystemExit("no case could be prepared (the reasons are printed above): nothing to time")
        from .scaling import flag_thread_regressions  # pylint: disable=import-outside-toplevel

        timings = flag_thread_regressions({t: time_all_groups(t, folders, rounds, min_sample_s)
                                           for t in args.threads})
        from .prepare import read_meta  # pylint: disable=import-outside-toplevel

        cases = [{**read_meta(f), "key": f.name, "kind": f.parent.name} for f in folders]
    settings = {"threads": args.threads, "rounds": rounds, "min_sample_s": min_sample_s, "quick": args.quick,
                "only": args.only, "minilm_v": args.minilm_v,
                "command": " ".join(["python -m benchmarks.speed", *(argv if argv is not None else sys.argv[1:])]),
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "build_seconds": round(build_s, 1),
                "wall_seconds": round(time.time() - start, 1), "cpu_seconds": round(cpu_seconds(), 1),
                "reused_cases": len(reused)}
    machine["loadavg_start"] = machine.pop("loadavg")
    machine["loadavg_end"] = list(os.getloadavg())
    paths = write_report(cases, timings, machine, library_versions(), shuffle_peak(), settings, out_dir)
    print("wrote", ", ".join(str(p) for p in paths))
    return 0

