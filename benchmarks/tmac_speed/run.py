"""T-MAC exact kernel speed table: ours against ONNX Runtime, one thread, medians.

    python -m benchmarks.tmac_speed [--quick] [--out benchmarks/results/tmac_speed.md]

Cases (``cases.default_cases``): GEMV 4096 x 4096 (M = 1) at 1, 2, 4 bits and ternary; MiniLM's
384 x 384 and 1536 x 384 linears at M = 128, 2 and 4 bits. Each framework of each case runs in
its own process (``worker``), one thread; our output is checked bit for bit against the NumPy
integer reference in that process. Ratios are peer time / our time (> 1: ours faster).
Writes the markdown table and a ``.json`` beside it; the header names the CPU and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common.machine import machine_info
from lut_tvm.files import write_json_atomic, write_text_atomic

from .cases import build_case, default_cases

FRAMEWORKS = ("tmac", "int8_dynamic", "int8_static", "nbits4", "nbits2", "fp32")
RESULTS = Path(__file__).resolve().parents[1] / "results"
GOALS = {  # (case name, bits) -> [(peer, minimum ratio peer / ours)] from the issue
    ("gemv", 2): [("int8_dynamic", 3.0), ("nbits4", 1.5)],
    ("gemv", 4): [("int8_dynamic", 1.5)],
    ("minilm", 2): [("int8_dynamic", 1.0)],
    ("minilm", 4): [("int8_dynamic", 1.0)],
}


def time_case(folder: Path) -> dict:
    """``{framework: worker row}``, one process per framework."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")]))}
    rows = {}
    for framework in FRAMEWORKS:
        done = subprocess.run([sys.executable, "-m", "benchmarks.tmac_speed.worker", str(folder), framework],
                              capture_output=True, text=True, env=env, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        rows[framework] = json.loads(lines[-1]) if lines else {
            "skipped": f"worker failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:200]}"}
    return rows


KEY = "cpu_us"  # the figure the table and goals use (see the report header)


def _cell(row: dict, ours: dict) -> str:
    if KEY not in row:
        return "n/a"
    ratio = f" ({row[KEY] / ours[KEY]:.2f}x)" if KEY in ours and row is not ours else ""
    return f"{row[KEY]:.0f}{ratio} [{row['us']:.0f}]"


def goal_lines(results: list[dict]) -> list[str]:
    lines = []
    for entry in results:
        case, timing = entry["case"], entry["timing"]
        for peer, need in GOALS.get((case["name"], case["bits"]), []):
            if KEY not in timing["tmac"] or KEY not in timing[peer] or not timing["tmac"].get("exact"):
                lines.append(f"- {case['slug']}: {peer} >= {need}x: not measured (or not exact)")
                continue
            ratio = timing[peer][KEY] / timing["tmac"][KEY]
            lines.append(f"- {case['slug']}: {peer} / ours = {ratio:.2f}x (goal >= {need}x): "
                         f"{'met' if ratio >= need else 'MISSED'}")
    return lines


def markdown(results: list[dict], machine: dict, load_after: list) -> str:
    head = ["# T-MAC exact kernel speed (`python -m benchmarks.tmac_speed`)", "",
            f"CPU: {machine['cpu_model']} ({', '.join(machine['flags'])}); 1 thread; medians of 7 samples "
            f"(each ~0.14 s of back-to-back calls), each framework in its own process.",
            f"Load average before: {machine['loadavg']}, after: {load_after} (2 cores, shared machine).",
            "Cells: median CPU time per call in microseconds (this thread's `time.thread_time`; the "
            "machine is shared and overloaded, so the wall clock also counts other processes' time), "
            "peer / ours in parentheses (> 1: ours faster), the wall-clock median in brackets. "
            "`exact`: our output equals the NumPy integer reference bit for bit (checked in the worker).",
            "Peers: ONNX Runtime " + machine.get("ort", "") + " fp32 MatMul, int8 dynamic (`quantize_dynamic`), "
            "int8 static (QDQ), MatMulNBits 4-bit and 2-bit (block 32, symmetric, accuracy_level 4).", "",
            "| case | M | K x N | bits | ours (form) | exact | int8 dyn | int8 static | MatMulNBits 4 | "
            "MatMulNBits 2 | fp32 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for entry in results:
        case, timing, tmac = entry["case"], entry["timing"], entry["timing"]["tmac"]
        ours = f"{tmac[KEY]:.0f} [{tmac['us']:.0f}] ({entry['form']})" if KEY in tmac else tmac.get("skipped", "n/a")
        cells = [_cell(timing[f], tmac) for f in ("int8_dynamic", "int8_static", "nbits4", "nbits2", "fp32")]
        head.append(f"| {case['name']} | {case['rows']} | {case['depth']} x {case['cols']} | {case['bits']} | "
                    f"{ours} | {tmac.get('exact', 'n/a')} | " + " | ".join(cells) + " |")
    skipped = sorted({f"{f}: {row['skipped']}" for e in results for f, row in e["timing"].items() if "skipped" in row})
    head += ["", "## Goals (issue 15)", "", *goal_lines(results)]
    if skipped:
        head += ["", "## Not measured", "", *[f"- {s}" for s in skipped]]
    return "\n".join(head) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tmac_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="GEMV 1024 x 1024 instead of 4096: a smoke run")
    parser.add_argument("--target", default="native")
    parser.add_argument("--only", nargs="*", default=None, help="case slugs (or prefixes) to run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or (RESULTS / "quick" / "tmac_speed.md" if args.quick else RESULTS / "tmac_speed.md")
    import onnxruntime  # pylint: disable=import-outside-toplevel

    machine = {**machine_info(), "ort": onnxruntime.__version__}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in default_cases(args.quick):
            if args.only and not any(case.slug.startswith(p) for p in args.only):
                continue
            folder = build_case(case, Path(tmp), args.target)
            meta = json.loads((folder / "case.json").read_text())
            timing = time_case(folder)
            results.append({"case": meta["case"], "form": meta["tmac"]["form"], "timing": timing,
                            "lookups": meta["tmac"]["lookups"]})
            print(case.slug, json.dumps({k: round(v.get(KEY, -1), 1) for k, v in timing.items()}),
                  "exact" if timing["tmac"].get("exact") else "NOT EXACT", flush=True)
    load_after = list(os.getloadavg())
    write_text_atomic(out, markdown(results, machine, load_after))
    write_json_atomic(out.with_suffix(".json"), {"machine": machine, "load_after": load_after, "results": results})
    print(f"wrote {out}")
    return 0
