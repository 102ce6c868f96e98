"""Accuracy benchmark: original vs k-means (MADDNESS-style) vs learned LUT centroids vs lut_tvm.optimize.

    python -m benchmarks.accuracy [--tasks digits minilm mnist1d kws] [--seed 0] [--threads 1] [--quick]
                                  [--methods every_layer optimize] [--optimize-budget 1.0]
    python benchmarks/accuracy/run.py --tasks digits

Each task writes ``benchmarks/results/accuracy/<task>.json`` when it finishes; the report
(``benchmarks/results/accuracy.md``, ``.json`` and ``.png``) is then rebuilt from every task result
present, so tasks can be run one at a time. ``--quick`` is a smoke run (a few epochs, small data):
its numbers mean nothing and it writes under ``benchmarks/results/quick/`` instead.
Data and models are offline: see ``benchmarks/accuracy/data.py`` (Debian packages unpacked into
``~/.cache/lut_tvm``) and the task modules.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

def _threads_from_argv(argv) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=int, default=1)
    return pre.parse_known_args(argv)[0].threads


# OpenMP pools (torch, scikit-learn's KMeans) and TVM's pool (the compiled rows) size themselves when
# first loaded: set them before.
os.environ.setdefault("OMP_NUM_THREADS", str(_threads_from_argv(sys.argv[1:])))
os.environ.setdefault("TVM_NUM_THREADS", str(_threads_from_argv(sys.argv[1:])))

import torch  # noqa: E402

from benchmarks.accuracy.data import DataUnavailable  # noqa: E402
from benchmarks.accuracy.report import write_report  # noqa: E402
from benchmarks.accuracy.tasks._shared import METHOD_GROUPS  # noqa: E402

TASKS = {  # name: module under benchmarks.accuracy.tasks, in priority order
    "digits": "digits_png",
    "minilm": "minilm",
    "mnist1d": "mnist1d",
    "kws": "kws",
}
RESULTS = Path(__file__).resolve().parents[1] / "results"


CLASSIFIERS = ("digits", "mnist1d", "kws")  # the tasks with method groups (``--methods``) and an optimize row


def carry_rows(result: dict, previous: dict | None) -> dict:
    """``result`` with the method rows it did not compute (those of ``previous``, the task's last result
    file, that ``result`` lacks) carried over, each marked ``carried_from`` with the previous run's date
    and ``carried_original``, the original accuracy it was measured against; the LUT layer summary too."""
    if not previous or "methods" not in previous:
        return result
    date = previous.get("environment", {}).get("date", "?")
    original = previous["methods"].get("original", {}).get(previous.get("metric", "acc"))
    for name, entry in previous["methods"].items():
        if name in result["methods"]:
            continue
        result["methods"][name] = {**entry, "carried_from": entry.get("carried_from", date),
                                   "carried_original": entry.get("carried_original", original)}
    if result.get("lut_layers") is None:
        result["lut_layers"] = previous.get("lut_layers")
    return result


def run_task(name: str, seed: int, quick: bool, out_dir: Path, extra: dict) -> dict | None:
    import importlib  # pylint: disable=import-outside-toplevel

    module = importlib.import_module(f"benchmarks.accuracy.tasks.{TASKS[name]}")
    start, load_start = time.perf_counter(), os.getloadavg()
    previous_path = out_dir / f"{name}.json"
    previous = json.loads(previous_path.read_text()) if previous_path.is_file() else None
    try:
        result = module.run(seed=seed, quick=quick, log=lambda msg: print(msg, flush=True), **extra)
        if set(extra.get("groups", METHOD_GROUPS)) != set(METHOD_GROUPS):  # --methods: the other rows carried
            result = carry_rows(result, previous)
    except DataUnavailable as err:
        print(f"[{name}] SKIPPED: data or model unavailable offline: {err}", flush=True)
        result = {"task": name, "skipped": str(err)}
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    result["command"] = " ".join([Path(sys.executable).name, "-m", "benchmarks.accuracy", *sys.argv[1:]])
    result["environment"] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                             "python": platform.python_version(), "machine": platform.machine(),
                             "date": time.strftime("%Y-%m-%d %H:%M:%S"), "seed": seed, "quick": quick,
                             "cpus": os.cpu_count(), "loadavg_1min_start_end": [load_start[0], os.getloadavg()[0]]}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"[{name}] done in {result['wall_seconds']:.0f} s -> {out_dir / (name + '.json')}", flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads, and TVM's / ONNX Runtime's for the compiled rows' latency "
                             "(1: these models are small, and 2 spinning threads on a busy 2-core machine are slower)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny epochs, numbers meaningless")
    parser.add_argument("--minilm-v", type=int, default=16, choices=(2, 4, 8, 16, 32), help="V of MiniLM's LUT layers")
    parser.add_argument("--minilm-rows", nargs="+", default=None,
                        choices=("ridge", "sensitivity", "lutnn", "reconstruction", "elut"),
                        help="MiniLM rows to compute (default all); the other learned rows are carried over "
                             "from the previous minilm.json (marked with its date) when data and V match")
    parser.add_argument("--minilm-elut-texts", type=int, default=2048,
                        help="distillation texts for MiniLM's eLUT-NN rows")
    parser.add_argument("--minilm-elut-e2e-epochs", type=int, default=1,
                        help="end-to-end epochs of MiniLM's eLUT-NN row (0: layer-wise only)")
    parser.add_argument("--minilm-elut-scales", choices=("layer", "column"), default="layer",
                        help="INT8 table scales of MiniLM's eLUT-NN rows (per layer or per output column)")
    parser.add_argument("--methods", nargs="+", choices=METHOD_GROUPS, default=list(METHOD_GROUPS),
                        help="method groups of the digits, MNIST-1D and KWS tasks: every_layer (k-means, ridge, "
                             "learned rows, every layer replaced), optimize (lut_tvm.optimize on a validation split); "
                             "the original is always measured, the other groups' rows are carried over from the "
                             "previous <task>.json (marked with its date)")
    parser.add_argument("--optimize-budget", type=float, default=1.0, help="optimize's accuracy budget in points "
                        "(on the validation split)")
    parser.add_argument("--optimize-finetune", type=int, default=None,
                        help="epochs of optimize's fine-tuning step (default: each task's own)")
    parser.add_argument("--optimize-finetune-extend", type=int, default=0,
                        help="after optimize's fine-tuning, try at most this many layers its search left dense, each "
                        "trained into the plan and kept if within budget (lut_tvm.optimize finetune_extend)")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from saved task results")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    per_task = base / "accuracy"
    if not args.report_only:
        for name in args.tasks:
            extra = {}
            if name == "minilm":
                extra = {"sub_len": args.minilm_v, "elut_texts": args.minilm_elut_texts,
                         "elut_e2e_epochs": args.minilm_elut_e2e_epochs, "elut_scales": args.minilm_elut_scales}
                previous = per_task / "minilm.json"
                if args.minilm_rows is not None:
                    extra["rows"] = tuple(args.minilm_rows)
                    extra["previous"] = json.loads(previous.read_text()) if previous.is_file() else None
            if name in CLASSIFIERS:
                optimize = {"budget": args.optimize_budget}
                if args.optimize_finetune is not None:
                    optimize["finetune"] = args.optimize_finetune
                if args.optimize_finetune_extend:
                    optimize["finetune_extend"] = args.optimize_finetune_extend
                extra = {"groups": tuple(args.methods), "optimize": optimize}
            run_task(name, args.seed, args.quick, per_task, extra)
    results = [json.loads((per_task / f"{n}.json").read_text()) for n in TASKS if (per_task / f"{n}.json").is_file()]
    if not results:
        print("no task results to report", file=sys.stderr)
        return 1
    paths = write_report(results, base)
    print("report:", ", ".join(str(p) for p in paths))
    return 0

