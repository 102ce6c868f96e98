"""Time models through the Relax CPU pipeline under the default dense-op schedule rules.

Usage: .venv/bin/python -m benchmarks.dense_rules_speed [--threads 1 2] [--no-baseline]
       .venv/bin/python -m benchmarks.dense_rules_speed --minilm [--threads 1 2] [--out FILE]

Default: a torch MLP and small CNN with DENSE_OP_RULES, without any schedule ("none") and in
torch. ``--minilm``: all-MiniLM-L6-v2 (batch 1, sequence 128) through ``lut_tvm.compile``
with no plan and with the V=16 k-means plan, under the previous rules ("before": row
reductions by dlight's cpu.Reduction) and the current ones ("after": RowReduction); per-kernel
medians (VM instrument hook) at 1 thread and whole-model medians per thread count, written
as a markdown table to ``--out``.

Each thread count runs in a fresh subprocess with TVM_NUM_THREADS (read when TVM's thread
pool starts) and torch.set_num_threads set to the same value.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common.kernel_bench import write_markdown  # noqa: E402
from benchmarks.common.timing import calibrated_median  # noqa: E402
from benchmarks.common.timing import PAUSE_S, interleaved_samples, vm_kernel_times  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "dense_rules_speed.md")
# Kernels reported one by one: the row reductions and the attention matmuls.
KERNEL_KEYS = ("softmax", "layer_norm", "matmul")
ROUNDS = 15  # interleaved before/after rounds (whole model and per-kernel profiles)


def _models():
    import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
    from torch import nn  # pylint: disable=import-outside-toplevel

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2, self.l3 = nn.Linear(256, 512), nn.Linear(512, 512), nn.Linear(512, 10)

        def forward(self, x):
            return self.l3(F.relu(self.l2(F.relu(self.l1(x)))))

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 16, 3), nn.Conv2d(16, 32, 3, stride=2)
            self.fc = nn.Linear(32 * 12 * 12, 10)

        def forward(self, x):
            return self.fc(F.relu(self.c2(F.relu(self.c1(x)))).flatten(1))

    return {
        "mlp (64x256->512->512->10)": (MLP(), (64, 256)),
        "cnn (1x1x28x28)": (CNN(), (1, 1, 28, 28)),
    }


def _worker(threads: int, baseline: bool) -> dict:
    import numpy as np  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel
    import tvm  # pylint: disable=import-outside-toplevel
    from tvm import relax  # pylint: disable=import-outside-toplevel
    from tvm.relax.frontend.torch import from_exported_program  # pylint: disable=C0415
    from tvm.s_tir import dlight  # pylint: disable=import-outside-toplevel

    from schedules.rules.dense_ops import DENSE_OP_RULES  # pylint: disable=C0415

    torch.set_num_threads(threads)
    cpu = tvm.target.codegen.llvm_get_system_cpu()
    target = tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": threads})
    results = {}
    for name, (model, shape) in _models().items():
        model = model.eval()
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model(x).numpy()
            row = {"torch": calibrated_median(lambda: model(x))}
        mod = from_exported_program(torch.export.export(model, (x,)), keep_params_as_input=False)
        for label, rules in (("rules", DENSE_OP_RULES), ("none", None)):
            if label == "none" and not baseline:
                continue
            seq = [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                   relax.transform.FoldConstant(), relax.transform.FuseOps(),
                   relax.transform.FuseTIR()]
            if rules:
                seq.append(dlight.ApplyDefaultSchedule(*rules))
            with target:
                lowered = tvm.transform.Sequential(seq)(mod)
            vm = relax.VirtualMachine(tvm.compile(lowered, target), tvm.cpu())
            inp = tvm.runtime.tensor(x.numpy())
            out = vm["main"](inp)
            out = out if hasattr(out, "numpy") else out[0]
            np.testing.assert_allclose(out.numpy(), ref, rtol=1e-3, atol=1e-3)
            number = 3 if label == "none" else 50
            evaluator = vm.time_evaluator("main", tvm.cpu(), number=number, repeat=5)
            row[label] = evaluator(inp).median
        results[name] = row
    return results


def _rule_sets() -> dict:
    """"before" / "after" default rule lists (LUT rules first, as lut_tvm.compile uses them)."""
    # pylint: disable=import-outside-toplevel
    from schedules.rules import LUT_RULES
    from schedules.rules.dense_ops import DENSE_OP_RULES, Reduction
    from schedules.rules.dense_ops._loops import safe_rule

    before = [safe_rule(Reduction(vector_rows=False)) if repr(r) == "Safe(Reduction)" else r
              for r in DENSE_OP_RULES]
    return {"before": [*LUT_RULES, *before], "after": [*LUT_RULES, *DENSE_OP_RULES]}


def _compile_with_rules(model, plan, example, rules):
    """``lut_tvm.compile`` with ``rules`` as its default schedule rules (no tuning log)."""
    import lut_tvm  # pylint: disable=import-outside-toplevel
    from lut_tvm import compiler  # pylint: disable=import-outside-toplevel

    saved = compiler.default_rules
    compiler.default_rules = lambda: rules
    try:
        return lut_tvm.compile(model, plan, example_inputs=(example,), tuning_logs=False)
    finally:
        compiler.default_rules = saved


def _minilm_worker(threads: int) -> dict:
    # pylint: disable=import-outside-toplevel
    import numpy as np
    import torch
    import tvm

    import lut_tvm
    from benchmarks.speed.models import MINILM_CALIBRATION, MINILM_PLAN_ROWS, minilm_model
    from benchmarks.speed.models import minilm_tokens

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)
    model, example = minilm_model(), minilm_tokens(1, seed=1)
    policy = lut_tvm.PlanPolicy(dense_sub_len=16, skip_last_dense=False,
                                max_rows=MINILM_PLAN_ROWS, seed=0)
    plans = {"none": None, "V=16": lut_tvm.build_kmeans_plan(
        model, minilm_tokens(MINILM_CALIBRATION, seed=2), policy, example_inputs=(example,))}
    inp = [tvm.runtime.tensor(example)]
    results = {}
    for plan_name, plan in plans.items():
        compiled = {label: _compile_with_rules(model, plan, example, rules)
                    for label, rules in _rule_sets().items()}
        outputs = {label: np.asarray(c(example)) for label, c in compiled.items()}
        np.testing.assert_allclose(outputs["after"], outputs["before"], rtol=1e-3, atol=1e-4)
        runs = {label: (lambda vm=c.vm: vm["main"](*inp)) for label, c in compiled.items()}
        samples = interleaved_samples(runs, rounds=ROUNDS, number=5, pause_s=PAUSE_S)
        for label in compiled:
            results[f"{plan_name}/{label}"] = {"model_s": statistics.median(samples[label])}
        if threads == 1:
            for label, kernels in _interleaved_kernel_ms(compiled, inp).items():
                results[f"{plan_name}/{label}"]["kernels_ms"] = kernels
    return results


def _interleaved_kernel_ms(compiled: dict, inp: list) -> dict:
    """Per label, the median ms per model run of each reported kernel (VM instrument hook),
    one profiled run of every model in turn per round."""
    per_run: dict = {label: [] for label in compiled}
    for _ in range(ROUNDS):
        for label, model in compiled.items():
            per_run[label].append(vm_kernel_times(model.vm, inp, 1))
    return {label: {name: statistics.median([run.get(name, 0.0) for run in runs])
                    for name in runs[0] if any(key in name for key in KERNEL_KEYS)}
            for label, runs in per_run.items()}


def _minilm_report(by_threads: dict, load: str) -> list[str]:
    lines = ["# Default dense-op rules on all-MiniLM-L6-v2 (batch 1, sequence 128)", "",
             "Command: `.venv/bin/python -m benchmarks.dense_rules_speed --minilm`. "
             "`lut_tvm.compile(model, plan, tuning_logs=False)`, target native, fast math on.",
             "before = row reductions (softmax, layer_norm) by dlight's cpu.Reduction (the "
             "previous default); after = RowReduction (vector partial sums, rows in L1).",
             f"Load average when the run started: {load}, 2 cores shared with other jobs. "
             f"Before and after run in turn, round after round ({ROUNDS} rounds of 5 runs; "
             "kernel profiles: one run each per round), so background load hits both alike; "
             "medians. The matmul kernels are scheduled the same way in both: their ratios show "
             "the noise left.", ""]
    one = by_threads.get(1)
    if one:
        lines += ["## Per kernel, 1 thread (ms per model run, all calls of the kernel)", "",
                  "| plan | kernel | before ms | after ms | speed-up |", "|---|---|---|---|---|"]
        for plan in ("none", "V=16"):
            before, after = (one[f"{plan}/{x}"]["kernels_ms"] for x in ("before", "after"))
            for name in sorted(after, key=lambda n: -before.get(n, 0.0)):
                b, a = before.get(name, float("nan")), after[name]
                lines.append(f"| {plan} | {name} | {b:.3f} | {a:.3f} | {b / a:.2f}x |")
        lines.append("")
    lines += ["## Whole model (ms per run)", "",
              "| plan | threads | before ms | after ms | speed-up |", "|---|---|---|---|---|"]
    for threads, res in sorted(by_threads.items()):
        for plan in ("none", "V=16"):
            b, a = (res[f"{plan}/{x}"]["model_s"] * 1e3 for x in ("before", "after"))
            lines.append(f"| {plan} | {threads} | {b:.2f} | {a:.2f} | {b / a:.2f}x |")
    return lines + [""]


def _run_worker(threads: int, extra: list[str]) -> dict:
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "benchmarks.dense_rules_speed", "--worker", str(threads), *extra]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"worker ({threads} threads) failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dense_rules_speed", description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-baseline", action="store_true", help="skip unscheduled timing")
    parser.add_argument("--minilm", action="store_true", help="MiniLM before/after the rules")
    parser.add_argument("--out", default=DEFAULT_OUT, help="markdown table (with --minilm)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = _minilm_worker(args.worker) if args.minilm else _worker(
            args.worker, not args.no_baseline)
        print("RESULT " + json.dumps(result))
        return
    if args.minilm:
        load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        by_threads = {t: _run_worker(t, ["--minilm"]) for t in args.threads}
        lines = _minilm_report(by_threads, load)
        print("\n".join(lines))
        write_markdown(args.out, lines)
        return
    header = f"{'model':28s} {'thr':>3s} {'torch ms':>9s} {'rules ms':>9s} {'none ms':>10s} "
    print(header + f"{'rules/torch':>11s} {'none/torch':>10s}")
    for threads in args.threads:
        rows = _run_worker(threads, ["--no-baseline"] if args.no_baseline else [])
        for name, row in rows.items():
            none = row.get("none", float("nan"))
            print(f"{name:28s} {threads:3d} {row['torch'] * 1e3:9.3f} {row['rules'] * 1e3:9.3f} "
                  f"{none * 1e3:10.3f} {row['rules'] / row['torch']:11.2f} "
                  f"{none / row['torch']:10.1f}")

