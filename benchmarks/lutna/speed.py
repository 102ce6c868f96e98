"""Speed column: the compiled exact-LUT model against ONNX Runtime int8 (and fp32), one thread."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common.peers import quantize_static_int8
from benchmarks.common.timing import calibrated_median


def _session(path: Path, threads: int):
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_runtime_int8(model: torch.nn.Module, calibration: np.ndarray, batch: np.ndarray, folder: Path,
                      threads: int = 1) -> dict:
    """ms per batch of ONNX Runtime fp32 and static int8 (QDQ, per-channel int8 weights)."""
    fp32, int8 = folder / "model_fp32.onnx", folder / "model_int8.onnx"
    torch.onnx.export(model.eval(), (torch.from_numpy(batch),), str(fp32), dynamo=False,
                      input_names=["x"], output_names=["y"])
    quantize_static_int8(fp32, int8, calibration, len(batch))
    out = {}
    for name, path in (("ort_fp32", fp32), ("ort_int8", int8)):
        session = _session(path, threads)
        feed = {"x": batch}
        out[f"{name}_ms"] = 1e3 * calibrated_median(lambda s=session: s.run(None, feed))
        out[f"{name}_logits"] = session.run(None, feed)[0]
    return out


def exact_lut_compiled(model: torch.nn.Module, plan, batch: np.ndarray) -> dict:
    """ms per batch of ``lut_tvm.compile(model, plan)`` and its outputs (raises if compile fails)."""
    import lut_tvm  # pylint: disable=import-outside-toplevel

    compiled = lut_tvm.compile(model.eval(), plan, target="native", example_inputs=(batch,))
    logits = np.asarray(compiled(batch))
    return {"exact_lut_ms": 1e3 * calibrated_median(lambda: compiled(batch)), "exact_lut_logits": logits}


def measure(model, plan, calibration, batch, expected_logits, threads: int = 1) -> dict:
    """The speed row: each part measured or ``"not measured: <reason>"``; logits compared."""
    row: dict = {"batch": int(len(batch)), "threads": threads}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            got = onnx_runtime_int8(model, calibration, batch, Path(tmp), threads)
            row.update({k: v for k, v in got.items() if k.endswith("_ms")})
            row["ort_int8_argmax_agrees"] = float((got["ort_int8_logits"].argmax(-1)
                                                   == expected_logits.argmax(-1)).mean())
        except Exception as err:  # pylint: disable=broad-except
            row["ort"] = f"not measured: {type(err).__name__}: {str(err)[:200]}"
    try:
        got = exact_lut_compiled(model, plan, batch)
        row["exact_lut_ms"] = got["exact_lut_ms"]
        row["exact_lut_max_abs_diff"] = float(np.abs(got["exact_lut_logits"] - expected_logits).max())
        row["exact_lut_bit_exact"] = bool(np.array_equal(got["exact_lut_logits"], expected_logits))
    except Exception as err:  # pylint: disable=broad-except
        row["exact_lut"] = f"not measured: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    if "exact_lut_ms" in row and "ort_int8_ms" in row:
        row["ort_int8_over_exact_lut"] = row["ort_int8_ms"] / row["exact_lut_ms"]
    return row
