"""Where a model-zoo case's time goes: TVM dense per PrimFunc (VM instrument hook) beside ONNX Runtime fp32 per node.

Usage: python -m benchmarks.speed.zoo_profile --work DIR [--rounds N] [--top K] [model ...]

Reads the cases a zoo run of the speed benchmark left in ``DIR/zoo/<model>`` (``--work``: ``model.onnx``,
``input.npy``, ``tvm_dense.so``), at one thread (``TVM_NUM_THREADS=1`` is set before TVM starts, ORT
``intra_op_num_threads = 1``). Per model: both totals, the time per op kind on each side (TVM's
functions by name: direct convs, matmuls -- 1x1 convs and small stems lowered to matmuls, Gemm --,
pools, layout glue (reshape, pad, concatenate, slices), the rest; ORT's nodes by op type) and the
``--top`` slowest of each. Medians over ``--rounds`` runs; the profiled totals include each tool's
own overhead, so compare them with each other, and the speed benchmark's tables for the real times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from .zoo import ZOO_MODELS  # noqa: E402

# TVM function kinds, the first whose marker the (fused) function name contains.
TVM_KINDS = (("conv2d", "conv (direct)"), ("matmul", "matmul (1x1 conv, im2col stem, Gemm)"),
             ("im2col", "im2col"), ("pool", "pool"), ("mean", "pool"), ("concatenate", "layout glue"),
             ("reshape", "layout glue"), ("pad", "layout glue"), ("strided_slice", "layout glue"),
             ("vm.builtin", "VM builtins"))


def tvm_kind(name: str) -> str:
    """The op kind of a TVM function called ``name``."""
    return next((kind for marker, kind in TVM_KINDS if marker in name), "other")


def tvm_profile(folder: Path, rounds: int) -> dict[str, float]:
    """Median ms per run of each function the case's ``tvm_dense.so`` calls."""
    from benchmarks.common.peers import tvm_runner  # pylint: disable=import-outside-toplevel
    from benchmarks.common.timing import vm_kernel_times  # pylint: disable=import-outside-toplevel

    _, vm, args = tvm_runner(folder / "tvm_dense.so", np.load(folder / "input.npy"))
    return vm_kernel_times(vm, args, rounds)


def ort_profile(folder: Path, rounds: int) -> dict[str, tuple[str, float]]:
    """``{node: (op type, median ms per run)}`` of ONNX Runtime fp32 on the case's ``model.onnx``."""
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="ort_profile_") as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.load(folder / "input.npy")}
        session.run(None, feed)  # warm-up: its events are dropped below
        for _ in range(rounds):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_run: dict = defaultdict(list)
    kinds = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node = event["name"][: -len("_kernel_time")]
            per_run[node].append(event["dur"] / 1e3)
            kinds[node] = event["args"].get("op_name", "?")
    return {node: (kinds[node], statistics.median(ms[-rounds:])) for node, ms in per_run.items()}


def by_kind(times: dict[str, float], kind_of) -> dict[str, float]:
    out: dict = defaultdict(float)
    for name, ms in times.items():
        out[kind_of(name)] += ms
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def model_report(name: str, tvm_ms: dict[str, float], ort_nodes: dict[str, tuple[str, float]], top: int) -> list[str]:
    """Markdown lines of one model's profile."""
    ort_ms = {node: ms for node, (_, ms) in ort_nodes.items()}
    tvm_total, ort_total = sum(tvm_ms.values()), sum(ort_ms.values())
    lines = [f"## {name}", "", f"TVM dense {tvm_total:.2f} ms, ONNX Runtime fp32 {ort_total:.2f} ms "
             f"(profiled, 1 thread; ratio {ort_total / tvm_total:.2f})", "",
             "| TVM kind | ms | share | | ORT op type | ms | share |", "|---|---|---|---|---|---|---|"]
    tvm_kinds = list(by_kind(tvm_ms, tvm_kind).items())
    ort_kinds = list(by_kind(ort_ms, lambda node: ort_nodes[node][0]).items())
    for i in range(max(len(tvm_kinds), len(ort_kinds))):
        left = (f"{tvm_kinds[i][0]} | {tvm_kinds[i][1]:.2f} | {100 * tvm_kinds[i][1] / tvm_total:.0f}%"
                if i < len(tvm_kinds) else " | | ")
        right = (f"{ort_kinds[i][0]} | {ort_kinds[i][1]:.2f} | {100 * ort_kinds[i][1] / ort_total:.0f}%"
                 if i < len(ort_kinds) else " | | ")
        lines.append(f"| {left} | | {right} |")
    lines += ["", "| slowest TVM functions | ms | | slowest ORT nodes | ms |", "|---|---|---|---|---|"]
    tvm_top = sorted(tvm_ms.items(), key=lambda kv: -kv[1])[:top]
    ort_top = sorted(ort_ms.items(), key=lambda kv: -kv[1])[:top]
    for i in range(max(len(tvm_top), len(ort_top))):
        left = f"`{tvm_top[i][0]}` | {tvm_top[i][1]:.3f}" if i < len(tvm_top) else " | "
        right = (f"{ort_nodes[ort_top[i][0]][0]} `{ort_top[i][0]}` | {ort_top[i][1]:.3f}"
                 if i < len(ort_top) else " | ")
        lines.append(f"| {left} | | {right} |")
    return lines + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="the speed benchmark's --work folder of a zoo run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--out", type=Path, help="also write the report here (markdown)")
    parser.add_argument("models", nargs="*", default=list(ZOO_MODELS))
    args = parser.parse_args(argv)
    lines = []
    for name in args.models:
        folder = args.work / "zoo" / name
        if not (folder / "tvm_dense.so").is_file():
            raise SystemExit(f"{folder}: no tvm_dense.so (run `python -m benchmarks.speed --only zoo --work "
                             f"{args.work}` first)")
        lines += model_report(name, tvm_profile(folder, args.rounds), ort_profile(folder, args.rounds), args.top)
        print("\n".join(lines[-(args.top + 30):]), flush=True)
    if args.out:
        from lut_tvm.files import write_text_atomic  # pylint: disable=import-outside-toplevel

        write_text_atomic(args.out, f"# Model zoo profile, 1 thread (load {os.getloadavg()[0]:.1f})\n\n"
                          + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
