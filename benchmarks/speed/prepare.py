"""Build every framework's artifact for one case into its folder, once, before any timing.

A case folder holds ``input.npy``, ``model.onnx``, ``model_int8.onnx`` (and ``model_int8_static.onnx``
when the case gives calibration inputs), ``tvm_dense.so``, one
``lut_<variant>.so`` per LUT plan (with ``plan_<variant>.npz``), the torch weights when the
worker cannot rebuild them, and ``meta.json`` (written last, atomically: a folder without it is
incomplete and is rebuilt).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from lut_tvm.files import write_json_atomic

from benchmarks.common.peers import compile_tvm, export_onnx, failure_text, quantize_int8, quantize_static_int8

LOG = logging.getLogger("benchmarks.speed")

META = "meta.json"
STATIC_INT8 = "model_int8_static.onnx"


def read_meta(folder: Path) -> dict | None:
    """The case's ``meta.json``, or None when the folder is incomplete."""
    try:
        return json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None


def plan_summary(plan) -> dict:
    """Layer count and the V values of a plan (``{"layers": n, "V": {"9": 6, "4": 2}, "names": [...]}``;
    a layer run as an int8 matmul counts under ``"int8"``)."""
    values: dict = {}
    for layer in plan.layers:
        key = "int8" if layer.is_int8 else str(layer.sub_vector_len)
        values[key] = values.get(key, 0) + 1
    luts = [l for l in plan.layers if not l.is_int8]
    return {"layers": len(plan.layers), "V": values, "K": sorted({l.num_centroids for l in luts}),
            "names": [f"{l.name} (int8)" if l.is_int8 else f"{l.name} (V={l.sub_vector_len}, C={l.num_codebooks})"
                      for l in plan.layers]}


def prepare_case(folder: Path, model, example: np.ndarray, plans: dict, meta: dict,
                 torch_source=None, build_variant=None, calibration: np.ndarray | None = None) -> dict:
    """Export/compile ``model`` for every framework into ``folder``; returns the written meta.

    ``plans`` maps a variant label (``V=16``) to a ``lut_tvm.Plan`` (or to whatever
    ``build_variant(folder, label, plan, source, example) -> variant meta`` builds; default
    ``lut_variant``); ``torch_source`` (a model or model file) is what TVM compiles, ``model`` by
    default. ``meta`` says how the worker rebuilds the torch model (see
    ``benchmarks.speed.models.load_torch_model``). With ``calibration`` (model inputs) ONNX
    Runtime's static int8 model is built too (peer ``ort_int8_static``).
    """
    import torch  # pylint: disable=import-outside-toplevel

    folder.mkdir(parents=True, exist_ok=True)
    example = np.ascontiguousarray(example, dtype=np.float32)
    np.save(folder / "input.npy", example)
    if meta.get("torch", {}).get("weights") == "state_dict":
        tmp = folder / ".torch.pt.tmp"
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, folder / "torch.pt")
    failed = dict(meta.pop("failed", {}))
    source = model if torch_source is None else torch_source
    steps = {"ort_fp32": lambda: export_onnx(model, example, folder / "model.onnx"),
             "ort_int8": lambda: quantize_int8(folder / "model.onnx", folder / "model_int8.onnx"),
             "tvm_dense": lambda: compile_tvm(source, None, example, folder / "tvm_dense.so")}
    if calibration is not None:
        steps["ort_int8_static"] = lambda: quantize_static_int8(
            folder / "model.onnx", folder / STATIC_INT8, np.asarray(calibration, np.float32), len(example))
    done = {name: _attempt(step, name, failed) for name, step in steps.items()
            if not (name.startswith("ort_int8") and "ort_fp32" in failed)}
    schedules = {"tvm_dense": done["tvm_dense"]["schedule"]} if done.get("tvm_dense") else {}
    variants = {}
    build = build_variant or lut_variant
    for label, plan in plans.items():
        built = _attempt(lambda: build(folder, label, plan, source, example), f"lut {label}", failed)
        if built:
            variants[label] = built
    meta = {**meta, "schedules": schedules, "lut_variants": variants, "failed": failed}
    if done.get("ort_int8_static"):
        meta["ort_int8_static"] = STATIC_INT8
    write_json_atomic(folder / META, meta)
    return meta


def lut_variant(folder: Path, label: str, plan, source, example: np.ndarray) -> dict:
    """A LUT-NN variant: ``plan_<slug>.npz`` and ``lut_<slug>.so`` (native target) in ``folder``;
    returns its meta (library, schedule label, plan summary)."""
    slug = variant_slug(label)
    plan.save(folder / f"plan_{slug}.npz")
    built = compile_tvm(source, plan, example, folder / f"lut_{slug}.so")
    return {"library": f"lut_{slug}.so", "schedule": built["schedule"], "plan": plan_summary(plan)}


def _attempt(step, name: str, failed: dict):
    """``step()``, or None with the failure recorded in ``failed[name]`` (one framework failing
    to build a case must not stop the others)."""
    try:
        return step() or True
    except Exception as err:  # pylint: disable=broad-except
        failed[name] = failure_text(err)
        LOG.warning("%s could not be built: %s", name, failed[name])
        return None


def variant_slug(label: str) -> str:
    """A variant label as a file-name part (``V=9/4`` -> ``V9_4``)."""
    return label.replace("=", "").replace("/", "_").replace(" ", "_")
