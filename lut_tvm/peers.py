"""ONNX Runtime as the peer a compiled model is compared with: the model as ONNX fp32 and dynamic int8,
its outputs, and its latency timed in a separate process (so ONNX Runtime's and TVM's thread pools
never share cores).

* ``export_onnx``: a torch module as ONNX (TorchScript exporter, opset 17, fixed shapes, input ``x``);
* ``quantize_int8``: ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations per call);
* ``ort_session`` / ``ort_runner``: a CPU session with ``intra_op_num_threads`` set;
* ``onnx_runtime_peers``: both peers of a model (torch module, ``.onnx`` or ``.pt2``), their outputs on
  given inputs and their median latency, each failure (no onnxruntime, an export error) in its row;
* ``python -m lut_tvm.peers``: the timing process ``time_in_subprocess`` starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import timeit
import warnings
from pathlib import Path

import numpy as np

from .files import write_json_atomic

LOG = logging.getLogger("lut_tvm")
ONNX_OPSET = 17
# label -> what a report calls it
PEERS = {"onnxruntime_fp32": "ONNX Runtime fp32", "onnxruntime_int8": "ONNX Runtime int8 (dynamic)"}


def failure_text(err: BaseException) -> str:
    """A one-line description of an exception (TVM errors carry pages of IR: keep the gist)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    informative = [line for line in lines if "Error" in line or "error" in line] or lines or [""]
    return f"{type(err).__name__}: {informative[0][:300]}"


def export_onnx(model, example: np.ndarray, path: Path) -> Path:
    """``model`` as an ONNX file (fixed shapes, one input ``x``), written atomically."""
    import torch  # pylint: disable=import-outside-toplevel

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(example),), str(tmp), dynamo=False,
                          input_names=["x"], output_names=["y"], opset_version=ONNX_OPSET)
    os.replace(tmp, path)
    return path


def quantize_int8(source: Path, path: Path) -> Path:
    """ONNX Runtime's dynamic int8 quantization of ``source`` (weights int8, written atomically)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # pylint: disable=C0415

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.onnx")
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on the root logger
    try:
        quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    os.replace(tmp, path)
    return path


def ort_session(path: Path, threads: int):
    """An ONNX Runtime CPU session of the file at ``path`` with ``threads`` intra-op threads, sequential."""
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_runner(path: Path, example: np.ndarray, threads: int):
    """A no-argument callable running the ONNX file at ``path`` on ``example`` with ``threads`` threads."""
    session = ort_session(path, threads)
    feed = {session.get_inputs()[0].name: example}
    return lambda: session.run(None, feed)


def onnx_of(model, example: np.ndarray, folder: Path) -> Path:
    """The model as an ONNX file: an ``.onnx`` path as it is; a torch module (or a ``.pt2`` file's
    program) exported at ``example``'s shape into ``folder``."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.suffix != ".pt2":
            return path
        import torch  # pylint: disable=import-outside-toplevel

        model = torch.export.load(str(path)).module()
    return export_onnx(model, example, Path(folder) / "model.onnx")


def median_ms(run, number: int, repeat: int) -> float:
    """Median over ``repeat`` samples of the mean milliseconds of ``number`` calls (one warm-up sample)."""
    timer = timeit.Timer(run)
    timer.timeit(number)
    return statistics.median(t / number for t in timer.repeat(repeat=repeat, number=number)) * 1e3


def time_in_subprocess(paths: dict[str, Path], example: np.ndarray, threads: int, number: int,
                       repeat: int) -> dict[str, float]:
    """``{label: median ms}`` of each ONNX file run on ``example`` with ``threads`` threads, timed one
    after the other in a fresh ``python -m lut_tvm.peers`` process."""
    with tempfile.TemporaryDirectory(prefix="lut_tvm_peers_") as tmp:
        x_path, out_path = Path(tmp) / "x.npy", Path(tmp) / "times.json"
        np.save(x_path, np.ascontiguousarray(example))
        root = str(Path(__file__).resolve().parents[1])  # so the child imports this same lut_tvm
        env = {**os.environ, "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        cmd = [sys.executable, "-m", "lut_tvm.peers", "--input", str(x_path), "--threads", str(threads),
               "--number", str(number), "--repeat", str(repeat), "--out", str(out_path),
               *[f"{label}={path}" for label, path in paths.items()]]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode:
            lines = proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"]
            raise RuntimeError(f"the ONNX Runtime timing process failed: {lines[-1]}")
        return json.loads(out_path.read_text())


def _run_batched(session, x: np.ndarray, batch: int) -> np.ndarray:
    from .optimizer.evaluate import run_batched  # pylint: disable=import-outside-toplevel  (TVM)

    name = session.get_inputs()[0].name
    return run_batched(lambda chunk: session.run(None, {name: chunk})[0], x, batch)


def onnx_runtime_peers(model, example: np.ndarray, eval_x: np.ndarray | None, threads: int, *,
                       number: int = 20, repeat: int = 5) -> dict[str, dict]:
    """ONNX Runtime fp32 and dynamic int8 of ``model`` (a torch module, ``.onnx`` or ``.pt2``):
    ``{label: {"name", "threads", "ms", "outputs" (on eval_x, in batches of example's size)}}``, or
    ``{"name", "threads", "error"}`` where a peer could not be made or run."""
    rows = {label: {"name": name, "threads": threads} for label, name in PEERS.items()}

    def fail(labels, reason):
        for label in labels:
            rows[label]["error"] = reason
        return rows

    try:
        import onnxruntime  # pylint: disable=import-outside-toplevel,unused-import  # noqa: F401
    except ImportError:
        return fail(PEERS, "onnxruntime is not installed (pip install onnxruntime)")
    with tempfile.TemporaryDirectory(prefix="lut_tvm_onnx_") as tmp:
        paths = {}
        try:
            paths["onnxruntime_fp32"] = onnx_of(model, example, Path(tmp))
        except Exception as err:  # pylint: disable=broad-except  (torch's exporter raises many types)
            return fail(PEERS, f"ONNX export failed: {failure_text(err)}")
        try:
            paths["onnxruntime_int8"] = quantize_int8(paths["onnxruntime_fp32"], Path(tmp) / "model_int8.onnx")
        except Exception as err:  # pylint: disable=broad-except
            fail(["onnxruntime_int8"], f"quantize_dynamic failed: {failure_text(err)}")
        for label, path in list(paths.items()):
            try:
                if eval_x is not None:
                    rows[label]["outputs"] = _run_batched(ort_session(path, threads), eval_x, len(example))
            except Exception as err:  # pylint: disable=broad-except
                fail([label], f"ONNX Runtime could not run it: {failure_text(err)}")
                del paths[label]
        if paths:
            try:
                for label, ms in time_in_subprocess(paths, example, threads, number, repeat).items():
                    rows[label]["ms"] = ms
            except RuntimeError as err:
                fail(paths, str(err))
    return rows


def main(argv=None) -> int:
    """The timing process: median ms of each ``label=file.onnx`` on one input, written as JSON."""
    parser = argparse.ArgumentParser(prog="python -m lut_tvm.peers", description=main.__doc__)
    parser.add_argument("models", nargs="+", help="label=path of an ONNX file")
    parser.add_argument("--input", required=True, help=".npy input of the model")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--number", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", required=True, help="JSON file written: {label: median ms}")
    args = parser.parse_args(argv)
    example = np.load(args.input)
    times = {}
    for item in args.models:
        label, _, path = item.partition("=")
        times[label] = median_ms(ort_runner(Path(path), example, args.threads), args.number, args.repeat)
    write_json_atomic(Path(args.out), times)
    return 0


if __name__ == "__main__":
    sys.exit(main())
