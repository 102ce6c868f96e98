"""A task's rows measured on the model ``lut_tvm.compile`` builds: accuracy and whole-model latency.

A LUT model is compiled as its users would: ``export_plan`` + ``to_dense_model`` -> ``lut_tvm.compile``
(default target, shipped tuning logs), so its conv1d layers run as LUT kernels (``Conv1dAsConv2d``);
the original is compiled dense. Accuracy: argmax over the test set, run in batches of ``BATCH``.
Latency: TVM's time evaluator, median of ``REPEAT`` samples of ``NUMBER`` runs of one batch, with
``TVM_NUM_THREADS`` threads (``run.py`` sets it from ``--threads``). The original row also gets
PyTorch fp32 and ONNX Runtime fp32 and dynamic int8 at the same batch and threads (``lut_tvm.peers``:
each timed in a separate process), each with its accuracy on the test set.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

import lut_tvm
from lut_tvm.optimizer.evaluate import run_batched
from lut_tvm.peers import peer_rows
from lut_tvm.train import export_plan, lut_layers, to_dense_model

BATCH = 50
NUMBER, REPEAT = 20, 7


def threads() -> int:
    return int(os.environ.get("TVM_NUM_THREADS") or os.cpu_count() or 1)


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.reshape(len(outputs), -1).argmax(-1) == labels).mean())


def compiled_row(model, test, batch: int = BATCH) -> dict:
    """``{"acc": compiled accuracy, "compiled": {...}}`` of ``model`` (a LUT model through its plan, or
    a dense one); ``compiled`` holds the batch, threads, median latency, and how many LUT layers ran."""
    plan = export_plan(model) if lut_layers(model) else None
    return compiled_plan_row(to_dense_model(model) if plan is not None else model, plan, test, batch)


def compiled_plan_row(dense, plan, test, batch: int = BATCH) -> dict:
    """``compiled_row`` of the dense torch model ``dense`` compiled with ``plan`` (None: all dense)."""
    x, labels = test
    example = np.ascontiguousarray(x[:batch])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = lut_tvm.compile(dense, plan, example_inputs=(example,))
    compiled(example)  # warm up: the first run starts the thread pool
    ms = compiled.benchmark(example, number=NUMBER, repeat=REPEAT) * 1e3
    info = {"batch": batch, "threads": threads(), "latency_ms": ms, "latency_ms_per_sample": ms / batch,
            "lut_layers": len(compiled.info.lut_layers), "timing": f"median of {REPEAT} x {NUMBER} runs"}
    return {"acc": _accuracy(run_batched(compiled, x, batch), labels), "compiled": info}


def framework_rows(model, test, batch: int = BATCH) -> dict:
    """``{label: {"name", "threads", "batch", "acc", "latency_ms"} or {..., "error"}}`` of ``model`` in PyTorch
    and ONNX Runtime."""
    x, labels = test
    rows = peer_rows(model, np.ascontiguousarray(x[:batch]), x, threads(), number=NUMBER, repeat=REPEAT)
    for row in rows.values():
        row["batch"] = batch
        outputs = row.pop("outputs", None)
        if outputs is not None:
            row["acc"] = _accuracy(outputs, labels)
        if "ms" in row:
            row["latency_ms"] = row.pop("ms")
    return rows
