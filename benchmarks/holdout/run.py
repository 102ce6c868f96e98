"""Each hold-out model through the user's flow (``lut-tvm optimize`` -> ``compile`` -> ``run``, as subprocesses)
and scored here: the plan's loss on the eval data the optimizer saw and on test data it never saw, against the
original torch model, the compiled LUT and dense models' latency, and the optimize time.

    python -m benchmarks.holdout [--models widemlp nobias ...] [--formats onnx pt2] [--budget 1.0]
                                 [--optimize-args "--verify-fraction 0"] [--tag NAME]

Writes ``benchmarks/results/holdout/<tag>.json`` and ``.md``. Models, data and plans are kept under
``~/.cache/lut_tvm/holdout`` (``LUT_TVM_CACHE``); a model is trained once per settings.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.accuracy.data import cache_dir, load_opencv_digits
from benchmarks.holdout.models import BATCH, MODELS, shaped, split_digits, train
from lut_tvm.files import write_json_atomic, write_text_atomic

RESULTS = Path(__file__).resolve().parents[1] / "results" / "holdout"


def prepare(name: str, work: Path, seed: int) -> Path:
    """The model ``name`` trained and exported (.onnx and .pt2), with its calibration / eval / test files."""
    import torch  # pylint: disable=import-outside-toplevel

    folder = work / f"{name}_e{MODELS[name][1]}_s{seed}"
    if (folder / "model.pt2").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    x, y = load_opencv_digits()[:2]
    parts = {k: (shaped(name, px), py) for k, (px, py) in split_digits(x, y, seed).items()}
    torch.set_num_threads(1)
    model = train(name, *parts["train"], seed=seed)
    np.save(folder / "calib.npy", parts["train"][0][:1500])
    for part in ("eval", "test"):
        np.savez(folder / f"{part}.npz", x=parts[part][0], y=parts[part][1])
    torch.save(model.state_dict(), folder / "state.pt")
    example = (torch.from_numpy(parts["eval"][0][:BATCH]),)
    torch.onnx.export(model, example, str(folder / "model.onnx"), dynamo=False)
    torch.export.save(torch.export.export(model, example), str(folder / "model.pt2"))
    return folder


def _cli(args: list[str], threads: int) -> tuple[str, float]:
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lut_tvm.cli", "--threads", str(threads), *args], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"lut-tvm {args[0]} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr, time.perf_counter() - start


def score(name: str, folder: Path, out: Path, threads: int) -> dict:
    """Losses of the compiled LUT model against the original torch model on eval and test; latencies."""
    import torch  # pylint: disable=import-outside-toplevel

    import lut_tvm  # pylint: disable=import-outside-toplevel
    from lut_tvm.optimizer.evaluate import metric_value, run_batched  # pylint: disable=import-outside-toplevel

    model = MODELS[name][0]()
    model.load_state_dict(torch.load(folder / "state.pt"))
    model.eval()
    lut, dense = lut_tvm.load(out / "model.so"), lut_tvm.compile(str(folder / "model.onnx"), None, tuning_logs=False)
    result = {}
    for part in ("eval", "test"):
        with np.load(folder / f"{part}.npz") as data:
            x, y = data["x"], data["y"]
        with torch.no_grad():
            reference = model(torch.from_numpy(x)).numpy()
        original = metric_value("accuracy", reference, reference, y)
        result[f"{part}_original"] = original
        result[f"{part}_loss"] = original - metric_value("accuracy", run_batched(lut, x, BATCH), reference, y)
    sample = np.ascontiguousarray(x[:BATCH])
    lut_ms, dense_ms = [], []
    for _ in range(5):  # interleaved rounds
        lut_ms.append(lut.benchmark(sample, number=20, repeat=3) * 1e3)
        dense_ms.append(dense.benchmark(sample, number=20, repeat=3) * 1e3)
    result["lut_ms"], result["dense_ms"] = float(np.median(lut_ms)), float(np.median(dense_ms))
    return result


def run_one(name: str, fmt: str, args, work: Path) -> dict:
    folder = prepare(name, work, args.seed)
    out = work / "runs" / args.tag / f"{name}_{fmt}"
    out.mkdir(parents=True, exist_ok=True)
    log, optimize_s = _cli(["optimize", str(folder / f"model.{fmt}"), "--calibration", str(folder / "calib.npy"),
                            "--eval", str(folder / "eval.npz"), "--budget", str(args.budget), "-o", str(out / "plan.npz"),
                            "--no-peers", "--cache-dir", str(work / "optimize_cache"),
                            *shlex.split(args.optimize_args)], args.threads)
    write_text_atomic(out / "optimize.log", log)
    _cli(["compile", str(folder / f"model.{fmt}"), "--plan", str(out / "plan.npz"), "-o", str(out / "model.so")],
         args.threads)
    report = json.loads((out / "plan_report" / "report.json").read_text())
    plan = {row["layer"]: (str(row["chosen_V"]) if row.get("chosen_V") else ("int8" if row.get("int8") else "dense"))
            for row in report["layers"]}
    held = report.get("held_back") or {}
    return {"model": name, "format": fmt, "budget": args.budget, "optimize_s": optimize_s, "plan": plan,
            "held_back_samples": held.get("samples", 0), "held_back_loss": held.get("loss"),
            "backed_off": held.get("backed_off", []), **score(name, folder, out, args.threads)}


def table(rows: list[dict]) -> str:
    lines = ["| model | eval loss | test loss | test within budget | plan | LUT ms | dense ms | optimize s |",
             "|---|---:|---:|---|---|---:|---:|---:|"]
    for r in rows:
        plan = ", ".join(f"{k}:{v}" for k, v in r["plan"].items() if v != "dense") or "all dense"
        lines.append(f"| {r['model']} .{r['format']} | {r['eval_loss']:.2f} | {r['test_loss']:.2f} | "
                     f"{'yes' if r['test_loss'] <= r['budget'] else 'NO'} | {plan} | {r['lut_ms']:.3f} | "
                     f"{r['dense_ms']:.3f} | {r['optimize_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.holdout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--formats", nargs="+", choices=["onnx", "pt2"], default=["onnx"])
    parser.add_argument("--budget", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimize-args", default="", help="more `lut-tvm optimize` flags, one quoted string")
    parser.add_argument("--tag", default="holdout", help="name of the result files and of the run folder")
    args = parser.parse_args(argv)
    work = cache_dir() / "holdout"
    rows = []
    for name in args.models:
        for fmt in args.formats:
            print(f"== {name} .{fmt} ({time.strftime('%H:%M:%S')}, load {os.getloadavg()[0]:.1f})", flush=True)
            rows.append(run_one(name, fmt, args, work))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            payload = {"settings": vars(args), "load_average": os.getloadavg(), "rows": rows}
            write_json_atomic(RESULTS / f"{args.tag}.json", payload)
            write_text_atomic(RESULTS / f"{args.tag}.md", f"# Hold-out models ({args.tag})\n\n"
                              f"`python -m benchmarks.holdout {' '.join(shlex.quote(a) for a in (argv or sys.argv[1:]))}`"
                              f", {args.threads} thread(s), budget {args.budget} points of accuracy\n\n{table(rows)}\n")
    return 0
