"""Time a torch MLP and small CNN through the Relax CPU pipeline, with/without DENSE_OP_RULES.

Usage: .venv/bin/python benchmarks/dense_rules_speed.py [--threads 1 2] [--no-baseline]

Each thread count runs in a fresh subprocess with TVM_NUM_THREADS (read when TVM's thread
pool starts) and torch.set_num_threads set to the same value.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.speed.timing import calibrated_median  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-baseline", action="store_true", help="skip unscheduled timing")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(_worker(args.worker, not args.no_baseline)))
        return
    header = f"{'model':28s} {'thr':>3s} {'torch ms':>9s} {'rules ms':>9s} {'none ms':>10s} "
    print(header + f"{'rules/torch':>11s} {'none/torch':>10s}")
    for threads in args.threads:
        env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        cmd = [sys.executable, __file__, "--worker", str(threads)]
        cmd += ["--no-baseline"] if args.no_baseline else []
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
        for name, row in json.loads(line[len("RESULT "):]).items():
            none = row.get("none", float("nan"))
            print(f"{name:28s} {threads:3d} {row['torch'] * 1e3:9.3f} {row['rules'] * 1e3:9.3f} "
                  f"{none * 1e3:10.3f} {row['rules'] / row['torch']:11.2f} "
                  f"{none / row['torch']:10.1f}")


if __name__ == "__main__":
    main()
