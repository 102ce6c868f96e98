"""The peers a compiled model is compared with, PyTorch fp32 and ONNX Runtime fp32 and dynamic int8: each
one's model file, its outputs, and its latency timed in a separate process (so its thread pool and
TVM's never share cores).

* ``export_onnx``: a torch module as ONNX (TorchScript exporter, opset 17, fixed shapes, input ``x``);
* ``quantize_int8``: ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations per call);
* ``ort_session`` / ``ort_runner``: a CPU session with ``intra_op_num_threads`` set;
* ``peer_rows``: the three peers of a model (torch module, ``.onnx`` or ``.pt2``; PyTorch runs the
  ``torch.export`` program), their outputs on given inputs and their median latency, each failure
  (no onnxruntime, an export error, an ONNX model for PyTorch) in its row;
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

ONNX_OPSET = 17
# label -> what a report calls it
PEERS = {"pytorch_fp32": "PyTorch fp32", "onnxruntime_fp32": "ONNX Runtime fp32",
         "onnxruntime_int8": "ONNX Runtime int8 (dynamic)"}


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

        model = _traceable(torch.export.load(str(path)).module())
    return export_onnx(model, example, Path(folder) / "model.onnx")


def _traceable(program_module):
    """A ``.pt2`` program's module wrapped so that the TorchScript ONNX exporter can trace it: the
    exporter switches the module to eval mode, which an exported program's module refuses
    ("Calling train() is not supported yet"); the wrapper does not register it as a child."""
    import torch  # pylint: disable=import-outside-toplevel

    for param in program_module.parameters():
        param.requires_grad_(False)  # traced as constants

    class Traced(torch.nn.Module):
        """Calls the program's module; its weights are traced as constants."""

        def __init__(self):
            super().__init__()
            object.__setattr__(self, "program", program_module)

        def forward(self, *args):
            return self.program(*args)

    return Traced()


def median_ms(run, number: int, repeat: int) -> float:
    """Median over ``repeat`` samples of the mean milliseconds of ``number`` calls (one warm-up sample)."""
    timer = timeit.Timer(run)
    timer.timeit(number)
    return statistics.median(t / number for t in timer.repeat(repeat=repeat, number=number)) * 1e3


def time_in_subprocess(paths: dict[str, Path], example: np.ndarray, threads: int, number: int,
                       repeat: int) -> dict[str, float]:
    """``{label: median ms}`` of each model file (``.onnx`` in ONNX Runtime, ``.pt2`` in PyTorch) run on
    ``example`` with ``threads`` threads, timed one after the other in a fresh ``python -m lut_tvm.peers``."""
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
            raise RuntimeError(f"the timing process failed: {lines[-1]}")
        return json.loads(out_path.read_text())


def pt2_of(model, example: np.ndarray, folder: Path) -> Path:
    """The model as a ``torch.export`` program file: a ``.pt2`` path as it is, a torch module exported at
    ``example``'s shape into ``folder``; ValueError for an ONNX file (no PyTorch program to run)."""
    if isinstance(model, (str, os.PathLike)):
        if Path(model).suffix == ".pt2":
            return Path(model)
        raise ValueError("the model is an ONNX file: there is no PyTorch program to run")
    import torch  # pylint: disable=import-outside-toplevel

    with torch.no_grad():
        program = torch.export.export(model.eval(), (torch.from_numpy(example),))
    path = Path(folder) / "model.pt2"
    torch.export.save(program, str(path))
    return path


def _call(label: str, path: Path, threads: int):
    """A callable ``x -> first output as NumPy`` of the peer ``label``'s file."""
    if label.startswith("pytorch"):
        import torch  # pylint: disable=import-outside-toplevel

        module = torch.export.load(str(path)).module()

        def run(x):
            with torch.inference_mode():
                out = module(torch.from_numpy(x))
            return (out[0] if isinstance(out, (tuple, list)) else out).numpy()

        return run
    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def peer_rows(model, example: np.ndarray, eval_x: np.ndarray | None, threads: int, *,
              number: int = 20, repeat: int = 5) -> dict[str, dict]:
    """PyTorch fp32 (the ``torch.export`` program), ONNX Runtime fp32 and dynamic int8 of ``model`` (a torch
    module, ``.onnx`` or ``.pt2``): ``{label: {"name", "threads", "ms", "outputs" (on eval_x, in batches of
    example's size)}}``, or ``{"name", "threads", "error"}`` where a peer could not be made or run."""
    from .optimizer.evaluate import run_batched  # pylint: disable=import-outside-toplevel  (TVM)

    rows = {label: {"name": name, "threads": threads} for label, name in PEERS.items()}

    def fail(labels, reason):
        for label in labels:
            rows[label]["error"] = reason

    with tempfile.TemporaryDirectory(prefix="lut_tvm_peers_") as tmp:
        paths = {}
        try:
            paths["pytorch_fp32"] = pt2_of(model, example, Path(tmp))
        except ValueError as err:
            fail(["pytorch_fp32"], str(err))
        except Exception as err:  # pylint: disable=broad-except  (torch.export raises many types)
            fail(["pytorch_fp32"], f"torch.export failed: {failure_text(err)}")
        paths.update(_onnx_files(model, example, Path(tmp), fail))
        for label, path in list(paths.items()):
            try:
                if eval_x is not None:
                    rows[label]["outputs"] = run_batched(_call(label, path, threads), eval_x, len(example))
            except Exception as err:  # pylint: disable=broad-except
                fail([label], f"could not run it: {failure_text(err)}")
                del paths[label]
        if paths:
            try:
                for label, ms in time_in_subprocess(paths, example, threads, number, repeat).items():
                    rows[label]["ms"] = ms
            except RuntimeError as err:
                fail(paths, str(err))
    return rows


def _onnx_files(model, example, folder: Path, fail) -> dict[str, Path]:
    """``{"onnxruntime_fp32": file, "onnxruntime_int8": file}``, less those that could not be made (``fail``ed)."""
    ort_labels = ["onnxruntime_fp32", "onnxruntime_int8"]
    try:
        import onnxruntime  # pylint: disable=import-outside-toplevel,unused-import  # noqa: F401
    except ImportError:
        fail(ort_labels, "onnxruntime is not installed (pip install onnxruntime)")
        return {}
    try:
        fp32 = onnx_of(model, example, folder)
    except Exception as err:  # pylint: disable=broad-except  (torch's exporter raises many types)
        fail(ort_labels, f"ONNX export failed: {failure_text(err)}")
        return {}
    try:
        return {"onnxruntime_fp32": fp32, "onnxruntime_int8": quantize_int8(fp32, folder / "model_int8.onnx")}
    except Exception as err:  # pylint: disable=broad-except
        fail(["onnxruntime_int8"], f"quantize_dynamic failed: {failure_text(err)}")
        return {"onnxruntime_fp32": fp32}


def main(argv=None) -> int:
    """The timing process: median ms of each ``label=file`` (.onnx, or .pt2 for a ``pytorch*`` label) on one
    input, written as JSON."""
    parser = argparse.ArgumentParser(prog="python -m lut_tvm.peers", description=main.__doc__)
    parser.add_argument("models", nargs="+", help="label=path of an ONNX file (or a .pt2 for pytorch* labels)")
    parser.add_argument("--input", required=True, help=".npy input of the model")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--number", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", required=True, help="JSON file written: {label: median ms}")
    args = parser.parse_args(argv)
    example = np.load(args.input)
    if any(item.startswith("pytorch") for item in args.models):
        import torch  # pylint: disable=import-outside-toplevel

        torch.set_num_threads(args.threads)
    times = {}
    for item in args.models:
        label, _, path = item.partition("=")
        call = _call(label, Path(path), args.threads)
        times[label] = median_ms(lambda call=call: call(example), args.number, args.repeat)
    write_json_atomic(Path(args.out), times)
    return 0


if __name__ == "__main__":
    sys.exit(main())
