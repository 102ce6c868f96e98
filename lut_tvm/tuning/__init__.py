"""MetaSchedule autotuning of lut_tvm models, and the per-device logs ``compile`` applies.

``tune_model`` (in ``tune``) measures every task of a model and writes a log; ``apply_tuning_log``
(in ``logs``) is what ``lut_tvm.compile`` calls. Submodules are imported on first use.
"""

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
