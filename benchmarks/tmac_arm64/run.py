"""LUT-NA's exact look-up forms compiled for ``arm64``, run on the emulated ARM64 device.

One seeded ``nn.Linear`` per shape ``MxKxN``, quantized at each weight bit width
(``lut_tvm.exact.quantize_model``) and compiled for ``arm64`` in each look-up form
(``ExactPlan.lookup``): ``tmac`` (NEON ``tbl`` on register-held byte tables, ``zip1`` / ``zip2``
into int16 words; nibble-packed weights), ``shuffle`` (NEON ``tbl``, then widening; one pattern per
byte) and ``gather``. Each is deployed to the emulated device (``lut-tvm device provision``) and:

* checked bit for bit there against the integer reference (``QuantizedTorchModel``);
* counted statically: instructions per 16 look-ups in the innermost loops that hold a ``tbl``
  (loop body / (its ``tbl`` count / 2): both forms look 16 columns up with two ``tbl``), the
  median over those loops; what can be said of an ARM core without one;
* timed there, interleaved rounds, median of rounds: QEMU TCG translating on this x86 host,
  *not* the speed of any ARM CPU (QEMU does not model an ARM pipeline or its memory).

``python -m benchmarks.tmac_arm64 [--shapes 1x1024x1024,32x384x384] [--bits 2,4] [--rounds 3]
[--rpc HOST:PORT]`` writes ``benchmarks/results/tmac_arm64.{md,json}``.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import numpy as np

FORMS = ("tmac", "shuffle", "gather")
RESULTS = Path(__file__).resolve().parents[1] / "results"
NOTE = ("QEMU TCG on an x86 host: these times are not the speed of any ARM CPU; only the "
        "static instruction counts say something about one")


def innermost_tbl_loops(asm: str) -> list[tuple[int, int]]:
    """``(instructions, tbl)`` of each innermost loop (a label and a later branch back to it in
    the same function) whose body holds a ``tbl``."""
    labels, insns, func = {}, [], None
    for line in asm.splitlines():
        if re.match(r"^[A-Za-z_][\w.$]*:", line):
            func = line.split(":")[0]
        label = re.match(r"^(\.L\w+):", line)
        if label:
            labels[label.group(1)] = (func, len(insns))
            continue
        parts = line.split()
        if parts and not parts[0].startswith((".", "//")) and not parts[0].endswith(":"):
            insns.append((func, parts))
    loops = []
    for end, (func, parts) in enumerate(insns):
        head = labels.get(parts[-1]) if parts[0].startswith(("b", "cb", "tb")) else None
        if head and head[0] == func and head[1] <= end:
            tbl = sum(p[0] == "tbl" for _, p in insns[head[1]:end + 1])
            if tbl:
                loops.append((head[1], end + 1, tbl))
    return [(e - s, t) for s, e, t in loops
            if not any(s <= s2 and e2 <= e and (s2, e2) != (s, e) for s2, e2, _ in loops)]


def per_16_lookups(asm: str) -> float | None:
    """Median instructions per 16 look-ups over the innermost ``tbl`` loops (None: no ``tbl``)."""
    loops = innermost_tbl_loops(asm)
    return float(np.median([n / (t / 2) for n, t in loops])) if loops else None


def build_cases(shapes, bits_list) -> list[dict]:
    """Every (shape, bits, form): the compiled model, its input and the reference output."""
    import torch  # pylint: disable=import-outside-toplevel

    import lut_tvm  # pylint: disable=import-outside-toplevel
    from lut_tvm import _tvm_compat  # pylint: disable=import-outside-toplevel
    from lut_tvm.exact.quantize import QuantizedTorchModel, predict, quantize_model  # pylint: disable=import-outside-toplevel

    cases = []
    for rows, depth, cols in shapes:
        torch.manual_seed(0)
        model = torch.nn.Linear(depth, cols).eval()
        rng = np.random.default_rng(0)
        x = rng.standard_normal((rows, depth)).astype(np.float32)
        calibration = rng.standard_normal((256, depth)).astype(np.float32)
        for bits in bits_list:
            plan = quantize_model(model, calibration, bits)
            want = predict(QuantizedTorchModel(model, plan), x)
            for form in FORMS:
                plan.lookup = form
                compiled = lut_tvm.compile(model, plan, target="arm64", example_inputs=(x,),
                                           tuning_logs=False)
                asm = _tvm_compat.executable_assembly(compiled.executable)
                cases.append({"shape": f"{rows}x{depth}x{cols}", "bits": bits, "form": form,
                              "compiled": compiled, "x": x, "want": want,
                              "per_16": per_16_lookups(asm)})
                print(f"compiled {cases[-1]['shape']} b={bits} {form}", flush=True)
    return cases


def run_on_device(cases: list[dict], rounds: int, rpc: str | None) -> str:
    """Load every case on the device, check it, time it in interleaved rounds; the device's text."""
    from lut_tvm.deploy import connect  # pylint: disable=import-outside-toplevel
    from lut_tvm.deploy.emulated import start_emulated  # pylint: disable=import-outside-toplevel

    device = None if rpc else start_emulated(0, do_provision=False, quiet=True)
    try:
        with tempfile.TemporaryDirectory(prefix="tmac_arm64_") as tmp, \
                connect(rpc or device.address, run_timeout=1200) as session:
            remotes = []
            for case in cases:  # one file name per library: the server keeps what it loaded
                name = f"{case['form']}_b{case['bits']}_{case['shape']}.so"
                path = case["compiled"].export(Path(tmp) / name)
                remotes.append(session.load_library(path, case["compiled"].info))
            for case, remote in zip(cases, remotes):
                case["bit_exact"] = bool(np.array_equal(remote(case["x"]), case["want"]))
                case["times_ms"] = []
            for _ in range(rounds):
                for case, remote in zip(cases, remotes):
                    case["times_ms"].append(remote.benchmark(case["x"], number=3, repeat=1).median_ms)
            return session.describe()
    finally:
        if device is not None:
            device.stop(kill=True)


def report(cases: list[dict], device: str, machine: dict) -> list[str]:
    lines = ["# LUT-NA exact look-up forms for arm64, on the emulated ARM64 device", "",
             f"Device: {device}. Host load average (1, 5, 15 min) at the start: "
             f"{', '.join(f'{v:.1f}' for v in machine['loadavg'])}.", "",
             f"**{NOTE}.**", "",
             "| shape MxKxN | bits | form | bit-exact | instructions / 16 look-ups (innermost tbl loop) "
             "| QEMU median ms | QEMU rounds ms |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for case in cases:
        per_16 = "-" if case["per_16"] is None else f"{case['per_16']:.1f}"
        rounds = ", ".join(f"{t:.2f}" for t in case["times_ms"])
        lines.append(f"| {case['shape']} | {case['bits']} | {case['form']} | {case['bit_exact']} | "
                     f"{per_16} | {np.median(case['times_ms']):.2f} | {rounds} |")
    return lines


def main(argv=None) -> int:
    from benchmarks.common.kernel_bench import write_markdown  # pylint: disable=import-outside-toplevel
    from benchmarks.common.machine import machine_info  # pylint: disable=import-outside-toplevel
    from lut_tvm.files import write_json_atomic  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(prog="python -m benchmarks.tmac_arm64", description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="1x1024x1024,32x384x384")
    parser.add_argument("--bits", default="2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rpc", help="an arm64 device's HOST:PORT (default: start the emulated one)")
    parser.add_argument("--out", default=str(RESULTS / "tmac_arm64"))
    args = parser.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    machine = machine_info()
    cases = build_cases(shapes, [int(b) for b in args.bits.split(",")])
    device = run_on_device(cases, args.rounds, args.rpc)
    lines = report(cases, device, machine)
    print("\n".join(lines))
    write_markdown(args.out + ".md", lines)
    write_json_atomic(args.out + ".json", {"device": device, "note": NOTE, "machine": machine, "cases": [
        {k: v for k, v in case.items() if k not in ("compiled", "x", "want")} for case in cases]})
    return 0 if all(case["bit_exact"] for case in cases) else 1
