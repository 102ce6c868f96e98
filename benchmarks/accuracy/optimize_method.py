"""The "optimize" method of a classifier task: ``lut_tvm.optimize`` on a validation split of the training
data, the chosen plan compiled and measured on the test set, and its whole-model latency.

* Validation: a stratified, seeded ``val_fraction`` of the training samples (never the test split);
  calibration (k-means rows) and fine-tuning use the rest (the "fit" samples). The original model was
  trained on all the training samples, so it has seen the validation samples.
* ``lut_tvm.optimize``: every LUT-able layer (Linear, Conv2d, Conv1d as its Conv2d), V from
  ``sub_lens`` (each layer's divisors of D; V = 2 left out to save time: its encode of D/2 codebooks
  does not pay on layers this small), the int8 matmul option for Linears, accuracy budget in
  points, batch ``compiled.BATCH``; ``finetune`` epochs of its fine-tuning step on the fit samples.
  Its measurements are cached under ``~/.cache/lut_tvm/accuracy_optimize/<task>``: a re-run is fast, and its
  time is marked ``warm_cache`` (delete the folder to time optimize from scratch).
* Test: the plan compiled with ``lut_tvm.compile`` on the model it binds to (the original or the
  fine-tuned copy), accuracy over the test set (``compiled.compiled_plan_row``).
* Latency: ``benchmarks.speed``'s case folder (``prepare_case``: ONNX fp32, dynamic int8, dense TVM and
  the plan's library) timed by its workers, one process per framework group at 1 thread, interleaved
  rounds, medians (``benchmarks.speed.worker``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from lut_tvm.files import user_cache_dir

from .common import seed_everything, stopwatch
from .compiled import BATCH, compiled_plan_row

VAL_FRACTION = 0.2
CALIBRATION = 1024
SUB_LENS = (3, 4, 5, 8, 9, 16, 32)  # 3 / 5: one input channel's window of a kernel-3 / 5 conv1d; 9: of a 3x3 conv
TIMING_ROUNDS, TIMING_MIN_SAMPLE_S = 15, 0.02
QUICK_ROUNDS, QUICK_MIN_SAMPLE_S = 3, 0.002
FRAMEWORKS = {"tvm_dense": "dense TVM", "lut optimize": "optimize plan (TVM)", "ort_fp32": "ONNX Runtime fp32",
              "ort_int8": "ONNX Runtime int8 (dynamic)", "pytorch": "PyTorch fp32"}


def validation_split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """``(x_fit, y_fit, x_val, y_val)``: a stratified, seeded ``fraction`` of the samples held out."""
    from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel

    x_fit, x_val, y_fit, y_val = train_test_split(x, y, test_size=fraction, random_state=seed, stratify=y)
    return x_fit, y_fit, x_val, y_val


def plan_layers(report: dict) -> list[dict]:
    """Per layer the optimizer considered, in model order: name, weight shape, and what it became
    (``V=9``, ``V=4 K=32``, ``int8`` or ``dense``)."""
    rows = []
    for layer in report["layers"]:
        if layer["int8"]:
            choice = "int8"
        elif layer["chosen_V"] is None:
            choice = "dense"
        else:
            k = layer.get("chosen_K") or 16
            choice = f"V={layer['chosen_V']}" + (f" K={k}" if k != 16 else "")
        rows.append({"layer": layer["layer"], "shape": layer["shape"], "choice": choice})
    return rows


def plan_counts(plan: list[dict]) -> dict:
    """``{"lut", "int8", "dense", "considered"}`` layer counts of a plan (``plan_layers``)."""
    lut = sum(row["choice"].startswith("V=") for row in plan)
    int8 = sum(row["choice"] == "int8" for row in plan)
    return {"lut": lut, "int8": int8, "dense": len(plan) - lut - int8, "considered": len(plan)}


def _names(model, kinds) -> list[str]:
    """Module paths of ``model``'s submodules whose class name is one of ``kinds``."""
    return [name for name, module in model.named_modules() if type(module).__name__ in kinds]


def timed_frameworks(original, tuned, plan, example: np.ndarray, torch_meta: dict, quick: bool, log) -> dict:
    """Median ms of dense TVM, the plan's library, ONNX Runtime fp32 / int8 and PyTorch fp32 on one batch,
    at 1 thread, each framework group in its own worker process (``benchmarks.speed``)."""
    # pylint: disable=import-outside-toplevel
    from benchmarks.speed.prepare import lut_variant, prepare_case
    from benchmarks.speed.run import time_all_groups

    rounds, min_sample = (QUICK_ROUNDS, QUICK_MIN_SAMPLE_S) if quick else (TIMING_ROUNDS, TIMING_MIN_SAMPLE_S)
    with tempfile.TemporaryDirectory(prefix="accuracy_optimize_") as tmp:
        folder = Path(tmp) / "case"
        meta = {"kind": "model", "name": "accuracy optimize", "batch": len(example), "torch": torch_meta}
        meta = prepare_case(folder, original, example, {"optimize": plan} if plan.layers else {}, meta,
                            build_variant=lambda f, label, p, _source, ex: lut_variant(f, label, p, tuned, ex))
        load = [os.getloadavg()[0]]
        timing = time_all_groups(1, [folder], rounds, min_sample, Path(tmp))
        load.append(os.getloadavg()[0])
    case = timing["cases"].get("case", {})
    result = {"ms": case.get("ms", {}), "min_ms": case.get("min_ms", {}), "max_ms": case.get("max_ms", {}),
              "relative_error_vs_pytorch": case.get("relative_error_vs_pytorch", {}),
              "lut_profile": case.get("lut_profile", {}).get("optimize"), "failed": meta.get("failed", {}),
              "schedules": {**meta.get("schedules", {}), **{k: v["schedule"] for k, v in meta["lut_variants"].items()}},
              "threads": 1, "batch": len(example), "rounds": rounds, "load_1min": load,
              "timing": f"median of {rounds} interleaved samples of >= {min_sample} s, one process per framework group"}
    log("    latency, 1 thread, batch " + f"{len(example)}: " + ", ".join(
        f"{FRAMEWORKS.get(k, k)} {v:.3f} ms" for k, v in result["ms"].items()))
    return result


def optimize_row(original, train_data, test, *, task: str, seed: int, log, quick: bool, torch_meta: dict,
                 budget: float = 1.0, finetune: int = 0, finetune_extend: int = 0, val_fraction: float = VAL_FRACTION,
                 sub_lens=SUB_LENS) -> dict:
    """The result row of the "optimize" method (see the module doc): test accuracy of the compiled plan,
    the plan, optimize's own figures on the validation split, wall / CPU seconds, latency per framework."""
    import lut_tvm  # pylint: disable=import-outside-toplevel

    x_fit, y_fit, x_val, y_val = validation_split(*train_data, val_fraction, seed)
    calibration = x_fit[:256 if quick else CALIBRATION]
    settings = {"budget": budget, "metric": "accuracy", "val_samples": len(x_val), "fit_samples": len(x_fit),
                "calibration_samples": len(calibration), "finetune_epochs": finetune,
                "finetune_extend": finetune_extend, "sub_lens": list(sub_lens),
                "batch": BATCH, "val_split": f"stratified {val_fraction:.0%} of the training samples, seed {seed}"}
    log(f"  optimize: budget {budget} points on {len(x_val)} validation samples, V in {list(sub_lens)}, "
        f"fine-tuning {finetune} epoch(s) on {len(x_fit)} samples")
    cache = user_cache_dir("accuracy_optimize", task + ("_quick" if quick else ""))
    # a re-run answers from the measurements cached by an earlier one: its time is not optimize's time
    settings["warm_cache"] = cache.is_dir() and any(cache.iterdir())
    seed_everything(seed)
    entry: dict = {}
    with stopwatch(entry):
        result = lut_tvm.optimize(original, calibration, x_val, y_val, budget=budget, metric="accuracy",
                                  batch=BATCH, sub_lens=tuple(sub_lens), seed=seed, peers=False, cache_dir=cache,
                                  finetune=finetune, finetune_data=(x_fit, y_fit) if finetune else None,
                                  finetune_extend=finetune_extend,
                                  timing_number=5 if quick else 20, timing_repeat=3 if quick else 5)
    report = result.report
    model = result.model if result.model is not None else original
    row = compiled_plan_row(model, result.plan if result.plan.layers else None, test)
    layers = plan_layers(report)
    row.update(entry)
    row["training"] = {"recipe": "lut_tvm.optimize (accuracy budget on the validation split)", **settings,
                       "fine_tuned": bool(report.get("finetune") and report["finetune"]["kept"])}
    row["optimize"] = {
        "settings": settings, "model_layers": _names(original, ("Linear", "Conv1d", "Conv2d")),
        "conv1d_layers": _names(original, ("Conv1d",)), "plan": layers, "choice": report["choice"],
        "val_original": report["original_metric"], "val_chosen_search": report["chosen_metric_search"],
        "val_chosen_compiled": report["chosen_metric_compiled"], "finetune": report.get("finetune"),
        "finetune_extend": report.get("finetune_extend"),
        "latency_ms": report["latency_ms"], "backed_off": report["backed_off_after_compiled_check"],
        "slower_than_dense": report.get("slower_than_dense"), "notes": report.get("notes", [])[-1:],
        "candidates": [{k: c[k] for k in ("layer", "sub_len", "saving_ms", "loss_alone", "status", "tables")}
                       for c in report["candidates"]],
        "target": report["target"]}
    counts = plan_counts(layers)
    chosen = ", ".join(f"{layer['layer']} {layer['choice']}" for layer in layers)
    log(f"  optimize: {row['acc']:.2%} compiled on test, {counts['lut']} LUT / {counts['int8']} int8 / "
        f"{counts['dense']} dense layers ({chosen}); {entry['seconds']:.0f} s, CPU {entry['cpu_seconds']:.0f} s")
    row["speed"] = timed_frameworks(original, model, result.plan, np.ascontiguousarray(test[0][:BATCH]),
                                    torch_meta, quick, log)
    return row
