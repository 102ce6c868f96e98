"""MetaSchedule autotuning (``tune_model``, also on a ``RemoteDevice``) and the logs compile applies."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "tune_model": "tune",
    "TuneResult": "tune",
    "RemoteDevice": "remote",
    "apply_tuning_log": "logs",
    "AppliedLog": "logs",
    "default_log_dir": "keys",
    "search_log_dirs": "keys",
    "shipped_log_dir": "keys",
    "user_log_dir": "keys",
    "device_name": "keys",
    "log_key": "keys",
    "log_path": "keys",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
