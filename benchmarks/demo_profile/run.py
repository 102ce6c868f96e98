"""Profile the bundled demo (digits CNN, batch 72): per-kernel and whole-model medians of the
dense and LUT compiles against PyTorch, at several thread counts.

Usage: .venv/bin/python -m benchmarks.demo_profile [--threads 1 2] [--repeat 50] [--top 12]
       [--cache DIR]

The CNN is trained and its k-means plan built once (``lut_tvm.demo`` functions, seeded), then
each thread count runs in a fresh subprocess with TVM_NUM_THREADS (read when TVM's thread pool
starts) and torch.set_num_threads set to the same value. Per-kernel times come first, from the
Relax VM instrument hook (``vm.set_instrument``), summed per kernel within one run, median over
runs (``benchmarks.common.timing.vm_kernel_times``). Whole-model times then alternate blocks of
runs of PyTorch, TVM dense and TVM LUT over several rounds (so background load hits all three
alike), with a short pause between blocks: PyTorch's spinning OpenMP workers otherwise steal the
cores from TVM's thread pool right after a PyTorch run (``timing.interleaved_samples``; each
block's mean is one sample). All times are medians in milliseconds; quote medians of repeated
invocations on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROUNDS = 5  # whole-model timing: this many rounds of one block of runs per framework
ROOT = Path(__file__).resolve().parents[2]

from benchmarks.common.timing import PAUSE_S, interleaved_samples, vm_kernel_times  # noqa: E402


def _prepare(work: Path, seed: int) -> None:
    """Train the demo CNN and build its plan; save both under ``work``."""
    import torch  # pylint: disable=import-outside-toplevel

    from lut_tvm.demo import EVAL_BATCH, load_digits_split, train_digits_cnn  # noqa: E402
    from lut_tvm.planner import PlanPolicy, build_kmeans_plan  # noqa: E402

    x_train, x_test, y_train, _ = load_digits_split(seed)
    model = train_digits_cnn(x_train, y_train, seed)
    plan = build_kmeans_plan(model, x_train, PlanPolicy(seed=seed),
                             example_inputs=(x_test[:EVAL_BATCH],))
    torch.save(model.state_dict(), work / "model.pt")
    plan.save(work / "plan.npz")


def _worker(work: Path, threads: int, repeat: int, seed: int) -> dict:
    """Runs in a subprocess with TVM_NUM_THREADS already set: compile, time, return numbers."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel

    from lut_tvm import _tvm_compat  # noqa: E402
    from lut_tvm.compiler import compile as compile_model  # noqa: E402
    from lut_tvm.demo import EVAL_BATCH, digits_cnn, load_digits_split  # noqa: E402
    from lut_tvm.plan import Plan  # noqa: E402

    torch.set_num_threads(threads)
    _, x_test, _, _ = load_digits_split(seed)
    x = np.ascontiguousarray(x_test[:EVAL_BATCH])
    model = digits_cnn()
    model.load_state_dict(torch.load(work / "model.pt"))
    model.eval()
    plan = Plan.load(work / "plan.npz")

    compiled = {"tvm_dense": compile_model(model, None, example_inputs=(x,)),
                "tvm_lut": compile_model(model, plan, example_inputs=(x,))}
    xt = _tvm_compat.to_device(x)
    vms = {name: _tvm_compat.virtual_machine(cm.executable) for name, cm in compiled.items()}
    x_torch = torch.from_numpy(x)

    # Per-kernel first, before PyTorch's own thread pool has ever run in this process.
    kernels = {name: vm_kernel_times(vm, [xt], repeat) for name, vm in vms.items()}
    with torch.no_grad():
        want = model(x_torch).numpy()
        fns = {"pytorch": lambda: model(x_torch)}
        for name, vm in vms.items():
            fns[name] = (lambda v: lambda: v["main"](xt))(vm)
        dense_out = compiled["tvm_dense"](x)
        dense_out = dense_out[0] if isinstance(dense_out, (list, tuple)) else dense_out
        dense_err = float(np.abs(dense_out - want).max())
        times = interleaved_samples(fns, ROUNDS, max(1, repeat // ROUNDS), PAUSE_S)
    model_ms = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
    return {"threads": threads, "model_ms": model_ms, "kernels_ms": kernels,
            "dense_max_abs_err": dense_err, "lut_layers": [l.name for l in plan.layers]}


def _print(result: dict, top: int) -> None:
    threads = result["threads"]
    print(f"\n=== {threads} thread(s) ===  (LUT layers: {', '.join(result['lut_layers'])}; "
          f"dense max |err| vs torch {result['dense_max_abs_err']:.1e})")
    base = result["model_ms"]["pytorch"]
    print(f"{'whole model':<40}{'median ms':>11}{'vs PyTorch':>12}")
    for name in ("pytorch", "tvm_dense", "tvm_lut"):
        lat = result["model_ms"][name]
        print(f"  {name:<38}{lat:>11.3f}{base / lat:>11.2f}x")
    for name, kernels in result["kernels_ms"].items():
        total = sum(kernels.values())
        print(f"{name + ' kernels (instrumented)':<40}{'median ms':>11}{'share':>8}")
        for kernel, ms in sorted(kernels.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {kernel:<38}{ms:>11.3f}{ms / total:>8.1%}")
        print(f"  {'sum':<38}{total:>11.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo_profile", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--top", type=int, default=12, help="kernels listed per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path,
                        help="keep the trained model and plan here and reuse them next time")
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        print(json.dumps(_worker(args.work, args.worker, args.repeat, args.seed)))
        return

    with tempfile.TemporaryDirectory(prefix="demo_profile_") as tmp:
        work = args.cache or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not ((work / "model.pt").exists() and (work / "plan.npz").exists()):
            _prepare(work, args.seed)
        for threads in args.threads:
            env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.demo_profile", "--worker", str(threads), "--work", str(work),
                 "--repeat", str(args.repeat), "--seed", str(args.seed)],
                env=env, cwd=ROOT, capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                raise SystemExit(f"worker for {threads} thread(s) failed")
            _print(json.loads(proc.stdout.strip().splitlines()[-1]), args.top)

