"""The frameworks compared, for one torch model: build each one's artifact, then load it to run.

Built once (in the parent process) under a case folder:

* ``model.onnx`` (``torch.onnx.export``, TorchScript exporter, opset 17) and ``model_int8.onnx``
  (``onnxruntime.quantization.quantize_dynamic``, int8 weights, activations quantized per call);
  with calibration inputs also ``model_int8_static.onnx`` (``quantize_static``, QDQ);
* ``tvm_dense.so`` (``lut_tvm.compile`` with no plan) and ``lut<suffix>.so`` (with a plan), each
  exported with its ``.json`` description; the schedule label says whether a shipped tuning log
  scheduled any of its functions (``tuned``) or the default rules did everything.

Loaded in each timing worker (one process per thread count): an ONNX Runtime session with
``intra_op_num_threads`` set, the Relax VM of a library, and a ``run`` closure for each.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from lut_tvm.peers import export_onnx, failure_text, ort_runner, quantize_int8

LOG = logging.getLogger("lut_tvm")
# the ONNX export, dynamic int8 quantization and ONNX Runtime sessions are lut_tvm.peers' (optimize's
# report compares with ONNX Runtime too); imported here for the benchmarks
__all__ = ["applied_tuning_logs", "compile_tvm", "export_onnx", "failure_text", "first_output", "ort_runner",
           "quantize_int8", "quantize_static_int8", "schedule_label", "torch_runner", "tvm_runner"]


def quantize_static_int8(source: Path, path: Path, calibration: np.ndarray, batch: int) -> Path:
    """ONNX Runtime's static int8 quantization of ``source`` (QDQ, per-channel int8 weights, int8
    activations calibrated on ``calibration`` in chunks of ``batch`` samples), written atomically."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,  # pylint: disable=C0415
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.chunks = iter([{"x": calibration[i:i + batch]}
                                for i in range(0, len(calibration) - batch + 1, batch)])

        def get_next(self):
            return next(self.chunks, None)

    if len(calibration) < batch:
        raise ValueError(f"{source}: static int8 calibration needs at least {batch} samples, got {len(calibration)}")
    tmp = path.with_name(f".{path.name}.tmp.onnx")
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(str(source), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    os.replace(tmp, path)
    return path


@contextmanager
def applied_tuning_logs(store: list):
    """Collect the ``AppliedLog`` of every ``lut_tvm.compile`` inside the block into ``store``."""

    class Collect(logging.Handler):
        def emit(self, record):
            if str(record.msg).startswith("applied tuning log") and record.args:
                store.append(record.args[0])

    handler, old_level, old_propagate = Collect(logging.INFO), LOG.level, LOG.propagate
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False  # the INFO records are only collected here, not printed
    try:
        yield store
    finally:
        LOG.removeHandler(handler)
        LOG.setLevel(old_level)
        LOG.propagate = old_propagate


def schedule_label(applied: list) -> str:
    """``tuned (N of M functions from <log>)`` when a tuning log scheduled something, else ``default rules``."""
    used = [log for log in applied if log.applied > 0]
    if not used:
        return "default rules"
    log = used[-1]
    return f"tuned ({log.applied} of {log.total} functions from tuning_logs/{log.path.parent.name}/{log.path.name})"


def compile_tvm(model, plan, example: np.ndarray, path: Path, target="native") -> dict:
    """Compile ``model`` (a torch module or model file) with ``plan`` (None: all dense) for
    ``target`` (the native one by default), export it to ``path``; returns
    ``{"schedule": label, "lut_layers": n}``."""
    import lut_tvm  # pylint: disable=import-outside-toplevel

    applied: list = []
    with applied_tuning_logs(applied), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = lut_tvm.compile(model, plan, target=target, example_inputs=(example,))
    compiled.export(path)
    return {"schedule": schedule_label(applied), "lut_layers": len(compiled.info.lut_layers)}


def tvm_runner(path: Path, example: np.ndarray):
    """``(run, vm, args)`` for the library at ``path``: ``run()`` calls the VM's ``main`` on ``example``."""
    import lut_tvm  # pylint: disable=import-outside-toplevel
    from lut_tvm import _tvm_compat  # pylint: disable=import-outside-toplevel

    vm = lut_tvm.load(path).vm
    args = [_tvm_compat.to_device(example)]
    return (lambda: vm["main"](*args)), vm, args


def torch_runner(model, example: np.ndarray):
    """A no-argument callable running ``model`` on ``example`` in inference mode."""
    import torch  # pylint: disable=import-outside-toplevel

    x = torch.from_numpy(example)

    def run():
        with torch.inference_mode():
            return model(x)

    return run


def first_output(result) -> np.ndarray:
    """The first output of any runner's result (torch tensor, TVM tensor, ORT list, tuples) as NumPy."""
    while not hasattr(result, "numpy") and not isinstance(result, np.ndarray):
        result = result[0]
    if hasattr(result, "detach"):
        result = result.detach()
    return np.asarray(result.numpy() if hasattr(result, "numpy") else result)
