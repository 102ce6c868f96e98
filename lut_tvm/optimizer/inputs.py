"""Checks of optimize's inputs (model, calibration, evaluation data, budget), each failure one clear line
(imports neither TVM nor torch until a model is imported)."""

from __future__ import annotations

import numpy as np

from ..errors import LutTvmError, ModelLoadError

METRICS = ("accuracy", "cosine")
REFITS = ("none", "ridge")  # optimize's table training (``optimizer.refit``)
DEFAULT_REFIT = "ridge"
DEFAULT_VERIFY_FRACTION = 0.3  # share of the eval data held back from the search (``optimizer.holdback``)
# Fewer held-back (or searched) samples than this measure too little: no check (at 0.3, evaluation data of 1,000
# samples or more is split). On ~100 held-back samples one sample is a point, and the check backed off every plan.
MIN_HELD_BACK = 300


def check_refit(refit: str) -> str:
    """``refit`` if it is one of ``REFITS``; else a one-line LutTvmError."""
    if refit not in REFITS:
        raise LutTvmError(f"optimize: refit {refit!r} is not one of {list(REFITS)}")
    return refit


def check_verify_fraction(fraction: float) -> float:
    """``fraction`` if it is in [0, 1); else a one-line LutTvmError."""
    if not np.isfinite(fraction) or not 0.0 <= fraction < 1.0:
        raise LutTvmError(f"optimize: verify fraction {fraction} must be at least 0 and below 1 "
                          "(the share of the evaluation data held back from the search)")
    return float(fraction)


def check_settings(metric: str, budget: float) -> None:
    if metric not in METRICS:
        raise LutTvmError(f"optimize: metric {metric!r} is not one of {list(METRICS)}")
    if not np.isfinite(budget) or budget < 0:
        raise LutTvmError(f"optimize: budget {budget} must be a finite number of points >= 0")


def check_eval(metric: str, eval_x, eval_y, where: str = "evaluation data"):
    """``(x float32, y int64 or None)``; labels are required for (only) the accuracy metric."""
    x = np.asarray(eval_x, dtype=np.float32)
    if x.ndim < 1 or len(x) == 0:
        raise LutTvmError(f"{where}: 'x' holds no samples")
    if metric == "accuracy":
        if eval_y is None:
            raise LutTvmError(f"{where}: metric 'accuracy' needs integer labels 'y' (or use --metric cosine)")
        y = np.asarray(eval_y)
        if y.ndim != 1 or len(y) != len(x):
            raise LutTvmError(f"{where}: labels 'y' have shape {list(y.shape)}, expected [{len(x)}] "
                              "(one per sample of 'x')")
        if not np.issubdtype(y.dtype, np.integer):
            raise LutTvmError(f"{where}: labels 'y' are {y.dtype}, expected integers (class indices)")
        return x, y.astype(np.int64)
    return x, None


def is_torch_module(model) -> bool:
    return not isinstance(model, (str, bytes)) and hasattr(model, "state_dict") and hasattr(model, "forward")


def import_checked(model, calibration: np.ndarray, eval_x: np.ndarray, batch: int | None):
    """``(imported, example_inputs)``: the model imported at ``batch`` (default: a torch module at
    min(64, samples), a file at its own static shape), its sample shape checked against the data."""
    from ..frontends import import_model  # pylint: disable=import-outside-toplevel  (TVM)

    example = None
    if is_torch_module(model) or batch:
        batch = batch or min(64, len(calibration))
        example = (calibration[:batch],)
    try:
        imported = import_model(model, example)
    except ModelLoadError as err:
        if example is not None or "dynamic shape" not in str(err):
            raise
        example = (calibration[: min(64, len(calibration))],)
        imported = import_model(model, example)
    if len(imported.input_shapes) != 1:
        raise LutTvmError(f"optimize: {imported.source} takes {len(imported.input_shapes)} inputs; "
                          "optimize supports models with one input")
    sample_shape = list(imported.input_shapes[0][1:])
    for name, data in (("calibration data", calibration), ("evaluation data 'x'", eval_x)):
        if list(data.shape[1:]) != sample_shape:
            raise LutTvmError(f"optimize: {name} has samples of shape {list(data.shape[1:])}, "
                              f"the model {imported.source} takes {sample_shape}")
    return imported, example
