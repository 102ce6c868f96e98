"""Time one Linear at all-MiniLM-L6-v2's shapes: TVM int8 (plan mode ``int8_dense``, 8- and 7-bit
activations), TVM fp32 dense, ONNX Runtime fp32 and ONNX Runtime int8 (dynamic quantization), each
in its own process.

Usage: .venv/bin/python -m benchmarks.int8_dense_speed [--threads 1] [--rounds 3] [--minilm] [--out FILE]

Per shape ``M x D x N`` (rows x in x out features, with bias): the torch ``Linear`` is exported
once to ONNX (and quantized by ``quantize_dynamic``) and compiled by ``lut_tvm.compile`` with no
plan, with a plan putting the layer in int8 (``LayerPlan.int8_dense``) and with the same plan at
7-bit activations (``act_bits`` 7: the ``vpmaddubsw`` kernel where the target has no VNNI). Each TVM library is
timed in a fresh ``--worker`` process (``TVM_NUM_THREADS``), and so is each ONNX file (ONNX
Runtime with ``intra_op_num_threads``); the whole set runs ``--rounds`` times and each figure is
the median over rounds of the per-process medians. A process's figure is the median of single
calls (up to ``CALLS`` of them after as many warm-up calls), not the mean of a block of calls: on a
machine shared by more processes than cores, a block of calls is preempted in proportion to the
load, so its mean measures the load share (2.6x the single-call median at load 7 on 2 cores);
a call of well under a time slice is rarely preempted, so the median call is the kernel's. The
int8 worker also reports its two kernels' share (VM instrument hook) and the cosine of its
output to the fp32 one. ``--minilm`` adds the whole all-MiniLM-L6-v2 (one sequence of 128
tokens) with every Linear in int8.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from benchmarks.common.kernel_bench import write_markdown  # noqa: E402
from benchmarks.common.machine import library_versions, machine_info  # noqa: E402
from benchmarks.common.peers import compile_tvm, export_onnx, first_output, quantize_int8, tvm_runner  # noqa: E402
from benchmarks.common.timing import vm_kernel_times  # noqa: E402
from lut_tvm.target_features import host_features  # noqa: E402
from lut_tvm.peers import ort_runner  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "int8_dense_speed.md"
SHAPES = ((128, 384, 384), (128, 384, 1536), (128, 1536, 384),  # MiniLM at sequence 128
          (1, 384, 384), (1, 384, 1536), (1, 1536, 384))  # and one token
ORT_LABELS = ("ort_fp32", "ort_int8")
# "native" is x86-avx512 (skylake-avx512: AVX-512BW, no VNNI); where this CPU has VNNI the int8
# plan is also compiled for the same CPU with VNNI (cascadelake), the vpdpbusd kernel.
VNNI_TARGET = {"kind": "llvm", "mcpu": "cascadelake"}
CALLS = 1000  # single calls timed per process (fewer for a slow call: about SECONDS of them)
SECONDS = 2.0


def median_single_call_ms(run) -> float:
    """Median milliseconds of one call of ``run`` over up to ``CALLS`` calls (as many warm-up calls first)."""
    start = time.perf_counter()
    run()
    calls = max(50, min(CALLS, int(SECONDS / max(time.perf_counter() - start, 1e-6))))
    times = []
    for _ in range(2 * calls):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times[calls:]) * 1e3


def _worker(path: str, x_path: str, out_path: str, threads: str) -> int:
    """Time one exported library or ONNX file on the saved input; write ``{"ms", "kernels"}``
    (``kernels``: TVM only) and the output beside."""
    example = np.load(x_path)
    result = {"kernels": {}}
    if path.endswith(".onnx"):
        run = ort_runner(Path(path), example, int(threads))
    else:
        run, vm, args = tvm_runner(Path(path), example)
        result["kernels"] = vm_kernel_times(vm, args, repeat=200)
    result["ms"] = median_single_call_ms(run)
    np.save(out_path + ".y.npy", first_output(run()))
    Path(out_path).write_text(json.dumps(result))
    return 0


def _time_file(path: Path, x_path: Path, threads: int, folder: Path) -> dict:
    out = folder / f"{path.stem}.json"
    env = {**os.environ, "TVM_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "benchmarks.int8_dense_speed", "--worker", str(path), str(x_path), str(out),
           str(threads)]
    subprocess.run(cmd, env=env, check=True)
    result = json.loads(out.read_text())
    result["y"] = np.load(str(out) + ".y.npy")
    return result


def _linear_case(shape):
    """``(model, example)``: one seeded ``M x D x N`` Linear with bias and a random input."""
    import torch  # pylint: disable=import-outside-toplevel

    rows, depth, cols = shape
    torch.manual_seed(0)
    return torch.nn.Linear(depth, cols).eval(), np.random.default_rng(0).standard_normal((rows, depth)).astype(np.float32)


def _minilm_case():
    """``(model, example)``: all-MiniLM-L6-v2, one sequence of 128 tokens (``benchmarks.speed.models``)."""
    from benchmarks.speed.models import minilm_model, minilm_tokens  # pylint: disable=import-outside-toplevel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return minilm_model(), minilm_tokens(1, seed=1)


def _build_case(model, example, folder: Path) -> dict:
    """``(files by label, compile info)``: every dense layer of ``model`` in int8, or none."""
    from lut_tvm.compiler import layer_sites  # pylint: disable=import-outside-toplevel
    from lut_tvm.frontends import import_model  # pylint: disable=import-outside-toplevel
    from lut_tvm.plan import LayerPlan, Plan  # pylint: disable=import-outside-toplevel
    from lut_tvm.weights import LayerKind  # pylint: disable=import-outside-toplevel

    sites = [site for site in layer_sites(import_model(model, (example,))) if site.kind is LayerKind.DENSE]
    plan, plan7 = (Plan([LayerPlan.int8_dense(f"dense{i}", site.weight.shape, site.fingerprint, bits)
                         for i, site in enumerate(sites)]) for bits in (8, 7))
    files = {"tvm_int8": folder / "tvm_int8.so", "tvm_int8_7bit": folder / "tvm_int8_7bit.so",
             "tvm_fp32": folder / "tvm_fp32.so"}
    info = {"tvm_int8": compile_tvm(model, plan, example, files["tvm_int8"]),
            "tvm_int8_7bit": compile_tvm(model, plan7, example, files["tvm_int8_7bit"]),
            "tvm_fp32": compile_tvm(model, None, example, files["tvm_fp32"])}
    if host_features().has("avx512vnni"):
        files["tvm_int8_vnni"] = folder / "tvm_int8_vnni.so"
        info["tvm_int8_vnni"] = compile_tvm(model, plan, example, files["tvm_int8_vnni"], target=VNNI_TARGET)
    files["ort_fp32"] = export_onnx(model, example, folder / "model.onnx")
    files["ort_int8"] = quantize_int8(files["ort_fp32"], folder / "model_int8.onnx")
    info["int8_layers"] = len(plan.layers)
    return files, info


def _kernel_split(runs: list[dict]) -> tuple[float, float]:
    """Median ms per run of the quantize kernels and of the int8 dense kernels (VM instrument)."""
    def total(run, key):
        return sum(ms for name, ms in run.items() if key in name)
    return (statistics.median(total(run, "int8_quantize") for run in runs),
            statistics.median(total(run, "int8_dense") for run in runs))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _measure(model, example, threads: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="int8_dense_speed_") as tmp:
        folder = Path(tmp)
        files, info = _build_case(model, example, folder)
        x_path = folder / "x.npy"
        np.save(x_path, example)
        samples: dict = {label: [] for label in files}
        kernels: dict = {label: [] for label in files if label.startswith("tvm_int8")}
        outputs = {}
        for _ in range(rounds):
            for label, path in files.items():
                result = _time_file(path, x_path, threads, folder)
                samples[label].append(result["ms"])
                outputs[label] = result["y"]
                if label in kernels:
                    kernels[label].append(result["kernels"])
    return {"ms": {label: statistics.median(values) for label, values in samples.items()},
            "kernels": {label: _kernel_split(runs) for label, runs in kernels.items()},
            "cosine": {label: _cosine(outputs[label], outputs["tvm_fp32"])
                       for label in ("tvm_int8", "tvm_int8_7bit", "ort_int8")},
            "schedule": info["tvm_fp32"]["schedule"], "int8_layers": info["int8_layers"]}


def _native_name() -> str:
    from lut_tvm.targets import resolve_target  # pylint: disable=import-outside-toplevel

    return str(resolve_target("native"))


def _markdown(results: dict, threads: int, rounds: int, machine_before: dict) -> list[str]:
    machine = machine_info()
    lines = [
        "# int8 dense layer speed (MiniLM shapes)", "",
        "Written by `python -m benchmarks.int8_dense_speed` (see its docstring). One `Linear` with bias at",
        f"{threads} thread(s); ms: median over {rounds} rounds of each process's median single call, each framework",
        "in its own process (the module docstring says why single calls). TVM int8 is",
        "the plan mode `int8_dense` (per-row uint8 activations quantized at run time, int8 weights per",
        "column, int32 accumulation: `lut_tvm.int8_reference`); ONNX Runtime int8 is `quantize_dynamic`",
        "(QInt8 weights). TVM int8 7-bit is the same plan with `act_bits` 7 (activations 0..127), which",
        "runs exactly on `vpmaddubsw` where the target has no VNNI.", "",
        f"CPU: {machine['cpu_model']} ({', '.join(machine['flags'])}); load average before "
        f"{machine_before['loadavg'][0]:.2f}, after {machine['loadavg'][0]:.2f} (2 cores, shared).",
        f"Versions: {', '.join(f'{k} {v}' for k, v in library_versions().items())}.", "",
        f"TVM int8 `native`: the `native` target ({_native_name()}; 8-bit: exact `vpmaddwd` without VNNI);",
        "TVM int8 VNNI: the same plan compiled for `cascadelake` (`vpdpbusd`), where this CPU has VNNI.",
        "Speed-ups are TVM fp32 / TVM int8 and ORT int8 / TVM int8, each against the fastest TVM int8.", "",
        "| model | TVM int8 native | TVM int8 7-bit | TVM int8 VNNI | TVM fp32 | ORT int8 | ORT fp32 | vs TVM fp32 "
        "| vs ORT int8 | quantize / dense kernels (ms): native; 7-bit; VNNI | cosine to fp32: TVM int8 / 7-bit / ORT int8 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for shape, row in results.items():
        ms, kernels = row["ms"], row["kernels"]
        best = min(ms[label] for label in kernels)
        vnni = f"{ms['tvm_int8_vnni']:.3f}" if "tvm_int8_vnni" in ms else "n/a"
        split = "; ".join(f"{quant:.3f} / {dense:.3f}" for quant, dense in kernels.values())
        lines.append(
            f"| {shape} | {ms['tvm_int8']:.3f} | {ms['tvm_int8_7bit']:.3f} | {vnni} | {ms['tvm_fp32']:.3f} "
            f"| {ms['ort_int8']:.3f} | {ms['ort_fp32']:.3f} | {ms['tvm_fp32'] / best:.2f}x | {ms['ort_int8'] / best:.2f}x "
            f"| {split} | " + " / ".join(f"{row['cosine'][k]:.5f}" for k in ("tvm_int8", "tvm_int8_7bit", "ort_int8"))
            + " |")
    layers = {label: row["int8_layers"] for label, row in results.items() if row["int8_layers"] != 1}
    if layers:
        lines += ["", "Whole models: every Linear in int8 (" + ", ".join(f"{k}: {v}" for k, v in layers.items())
                  + "); the kernel columns sum over the layers. A whole-model call lasts several time slices, so on a",
                  "loaded machine its figures include the other processes' share, all frameworks alike: compare the ratios."]
    schedules = sorted({row["schedule"] for row in results.values()})
    lines += ["", f"TVM fp32 dense scheduled by: {'; '.join(schedules)}.", ""]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_dense_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--minilm", action="store_true",
                        help="also the whole all-MiniLM-L6-v2 (batch 1, sequence 128) with every Linear in int8")
    parser.add_argument("--worker", nargs=4, metavar=("FILE", "X", "OUT", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(*args.worker)
    machine_before = machine_info()
    results = {}
    cases = {" x ".join(str(d) for d in shape): (lambda shape=shape: _linear_case(shape)) for shape in SHAPES}
    if args.minilm:
        cases["all-MiniLM-L6-v2 (1 x 128 tokens)"] = _minilm_case
    for label, make in cases.items():
        results[label] = _measure(*make(), args.threads, args.rounds)
        print(label, json.dumps(results[label]["ms"]), flush=True)
    write_markdown(args.out, _markdown(results, args.threads, args.rounds, machine_before))
    return 0
