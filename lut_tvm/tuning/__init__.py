"""MetaSchedule autotuning (``tune_model``) and the per-device logs ``compile`` applies."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "tune_model": "tune",
    "TuneResult": "tune",
    "apply_tuning_log": "logs",
    "AppliedLog": "logs",
    "default_log_dir": "keys",
    "device_name": "keys",
    "log_key": "keys",
    "log_path": "keys",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lut_tvm.tuning' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
