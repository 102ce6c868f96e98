"""Time one Linear at all-MiniLM-L6-v2's shapes: TVM int8 (plan mode ``int8_dense``), TVM fp32
dense, ONNX Runtime fp32 and ONNX Runtime int8 (dynamic quantization), each in its own process.

Usage: .venv/bin/python -m benchmarks.int8_dense_speed [--threads 1] [--rounds 3] [--out FILE]

Per shape ``M x D x N`` (rows x in x out features, with bias): the torch ``Linear`` is exported
once to ONNX (and quantized by ``quantize_dynamic``) and compiled by ``lut_tvm.compile`` with no
plan and with a plan putting the layer in int8 (``LayerPlan.int8_dense``). Each TVM library is
timed in a fresh ``--worker`` process (``TVM_NUM_THREADS``), the two ONNX files in one
``lut_tvm.peers`` process; the whole set runs ``--rounds`` times and each figure is the median
over rounds of the per-process medians (``lut_tvm.peers.median_ms``: 7 samples of 50 calls, for
every framework alike). The
int8 worker also reports its two kernels' share (VM instrument hook) and the cosine of its
output to the fp32 one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from benchmarks.common.kernel_bench import write_markdown  # noqa: E402
from benchmarks.common.machine import library_versions, machine_info  # noqa: E402
from benchmarks.common.peers import compile_tvm, export_onnx, first_output, quantize_int8, tvm_runner  # noqa: E402
from benchmarks.common.timing import vm_kernel_times  # noqa: E402
from lut_tvm.peers import median_ms, time_in_subprocess  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "int8_dense_speed.md"
SHAPES = ((128, 384, 384), (128, 384, 1536), (128, 1536, 384))  # MiniLM at sequence 128
TVM_LABELS = ("tvm_int8", "tvm_fp32")
ORT_LABELS = ("ort_fp32", "ort_int8")
NUMBER, REPEAT = 50, 7  # calls per sample, samples: as lut_tvm.peers times ONNX Runtime


def _worker(lib: str, x_path: str, out_path: str) -> int:
    """Time one exported library on the saved input; write ``{"ms", "kernels", "y"}``."""
    example = np.load(x_path)
    run, vm, args = tvm_runner(Path(lib), example)
    result = {"ms": median_ms(run, NUMBER, REPEAT),
              "kernels": vm_kernel_times(vm, args, repeat=50)}
    np.save(out_path + ".y.npy", first_output(run()))
    Path(out_path).write_text(json.dumps(result))
    return 0


def _time_library(lib: Path, x_path: Path, threads: int, folder: Path) -> dict:
    out = folder / f"{lib.stem}.json"
    env = {**os.environ, "TVM_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "benchmarks.int8_dense_speed", "--worker", str(lib), str(x_path), str(out)]
    subprocess.run(cmd, env=env, check=True)
    result = json.loads(out.read_text())
    result["y"] = np.load(str(out) + ".y.npy")
    return result


def _build_case(shape, folder: Path) -> tuple[dict, np.ndarray, dict]:
    """``(files by label, example input, compile info)`` of one ``M x D x N`` Linear."""
    import torch  # pylint: disable=import-outside-toplevel

    from lut_tvm.compiler import layer_sites  # pylint: disable=import-outside-toplevel
    from lut_tvm.frontends import import_model  # pylint: disable=import-outside-toplevel
    from lut_tvm.plan import LayerPlan, Plan  # pylint: disable=import-outside-toplevel

    rows, depth, cols = shape
    torch.manual_seed(0)
    model = torch.nn.Linear(depth, cols).eval()
    example = np.random.default_rng(0).standard_normal((rows, depth)).astype(np.float32)
    (site,) = layer_sites(import_model(model, (example,)))
    plan = Plan([LayerPlan.int8_dense("linear", site.weight.shape, site.fingerprint)])
    files = {"tvm_int8": folder / "tvm_int8.so", "tvm_fp32": folder / "tvm_fp32.so",
             "ort_fp32": export_onnx(model, example, folder / "model.onnx")}
    files["ort_int8"] = quantize_int8(files["ort_fp32"], folder / "model_int8.onnx")
    info = {"tvm_int8": compile_tvm(model, plan, example, files["tvm_int8"]),
            "tvm_fp32": compile_tvm(model, None, example, files["tvm_fp32"])}
    return files, example, info


def _measure(shape, threads: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="int8_dense_speed_") as tmp:
        folder = Path(tmp)
        files, example, info = _build_case(shape, folder)
        x_path = folder / "x.npy"
        np.save(x_path, example)
        samples: dict = {label: [] for label in (*TVM_LABELS, *ORT_LABELS)}
        kernels, outputs = [], {}
        for _ in range(rounds):
            for label in TVM_LABELS:
                result = _time_library(files[label], x_path, threads, folder)
                samples[label].append(result["ms"])
                outputs[label] = result["y"]
                if label == "tvm_int8":
                    kernels.append(result["kernels"])
            ort = time_in_subprocess({label: files[label] for label in ORT_LABELS}, example, threads, NUMBER, REPEAT)
            for label in ORT_LABELS:
                samples[label].append(ort[label])
    int8, fp32 = outputs["tvm_int8"].ravel(), outputs["tvm_fp32"].ravel()
    names = sorted({name for k in kernels for name in k})
    return {"ms": {label: statistics.median(values) for label, values in samples.items()},
            "kernels": {name: statistics.median(k.get(name, 0.0) for k in kernels) for name in names},
            "cosine": float(int8 @ fp32 / np.linalg.norm(int8) / np.linalg.norm(fp32)),
            "schedule": info["tvm_fp32"]["schedule"]}


def _markdown(results: dict, threads: int, rounds: int, machine_before: dict) -> list[str]:
    machine = machine_info()
    lines = [
        "# int8 dense layer speed (MiniLM shapes)", "",
        "Written by `python -m benchmarks.int8_dense_speed` (see its docstring). One `Linear` with bias at",
        f"{threads} thread(s); median ms over {rounds} rounds, each framework in its own process. TVM int8 is",
        "the plan mode `int8_dense` (per-row uint8 activations quantized at run time, int8 weights per",
        "column, int32 accumulation: `lut_tvm.int8_reference`); ONNX Runtime int8 is `quantize_dynamic`",
        "(QInt8 weights).", "",
        f"CPU: {machine['cpu_model']} ({', '.join(machine['flags'])}); load average before "
        f"{machine_before['loadavg'][0]:.2f}, after {machine['loadavg'][0]:.2f} (2 cores, shared).",
        f"Versions: {', '.join(f'{k} {v}' for k, v in library_versions().items())}.", "",
        "| M x D x N | TVM int8 | TVM fp32 | ORT int8 | ORT fp32 | TVM int8 vs TVM fp32 | vs ORT int8 "
        "| int8 kernels: quantize / dense (ms) | cosine int8 to fp32 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for shape, row in results.items():
        ms, kernels = row["ms"], row["kernels"]
        quant = sum(v for k, v in kernels.items() if "quantize" in k)
        dense = sum(v for k, v in kernels.items() if "int8_dense" in k)
        lines.append(
            f"| {shape} | {ms['tvm_int8']:.3f} | {ms['tvm_fp32']:.3f} | {ms['ort_int8']:.3f} | {ms['ort_fp32']:.3f} "
            f"| {ms['tvm_fp32'] / ms['tvm_int8']:.2f}x | {ms['ort_int8'] / ms['tvm_int8']:.2f}x "
            f"| {quant:.3f} / {dense:.3f} | {row['cosine']:.5f} |")
    schedules = sorted({row["schedule"] for row in results.values()})
    lines += ["", f"TVM fp32 dense scheduled by: {'; '.join(schedules)}.", ""]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_dense_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--worker", nargs=3, metavar=("LIB", "X", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(*args.worker)
    machine_before = machine_info()
    results = {}
    for shape in SHAPES:
        label = " x ".join(str(d) for d in shape)
        results[label] = _measure(shape, args.threads, args.rounds)
        print(label, json.dumps(results[label]["ms"]), flush=True)
    write_markdown(args.out, _markdown(results, args.threads, args.rounds, machine_before))
    return 0
