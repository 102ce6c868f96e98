"""Where a target's tuning records live: device folder, key file and the default log dir."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .. import _tvm_compat
from ..files import user_cache_dir

# Bump when the meaning of a record changes (design spaces, kernels' TIR, key fields).
TUNING_FORMAT = "lut_tvm.tuning"
TUNING_FORMAT_VERSION = 1
KEY_FILE = "key.json"
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
# Target fields that do not change the generated code's validity (threads are a run-time choice).
_IGNORED_TARGET_FIELDS = ("num-cores", "tag")
ENV_LOG_DIR = "LUT_TVM_TUNING_LOGS"


def shipped_log_dir() -> Path:
    """``tuning_logs/`` at the root of the lut_tvm checkout: the logs shipped with lut_tvm."""
    return Path(__file__).resolve().parents[2] / "tuning_logs"


def user_log_dir() -> Path:
    """Where ``lut-tvm tune`` writes by default: ``$LUT_TVM_TUNING_LOGS``, else
    ``$XDG_CACHE_HOME/lut_tvm/tuning_logs`` (``~/.cache/lut_tvm/tuning_logs``)."""
    if os.environ.get(ENV_LOG_DIR):
        return Path(os.environ[ENV_LOG_DIR]).expanduser()
    return user_cache_dir("tuning_logs")


def search_log_dirs() -> list[Path]:
    """The roots ``compile`` looks in by default, in order: ``user_log_dir()`` (this machine's
    own tuning wins), then ``shipped_log_dir()``."""
    dirs = [user_log_dir(), shipped_log_dir()]
    return [d for i, d in enumerate(dirs) if d not in dirs[:i]]


def default_log_dir() -> Path:
    """``$LUT_TVM_TUNING_LOGS``, else the shipped ``tuning_logs/`` (the root the speed
    benchmark's re-tuning writes to by default; ``tune`` writes to ``user_log_dir()``)."""
    if os.environ.get(ENV_LOG_DIR):
        return Path(os.environ[ENV_LOG_DIR]).expanduser()
    return shipped_log_dir()


def _plain(value):
    """``value`` as JSON-able Python (TVM containers become lists and dicts)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "__iter__") and hasattr(value, "__len__"):
        return [_plain(v) for v in value]
    return str(value)


def target_string(target) -> str:
    """The target as canonical JSON, without the fields in ``_IGNORED_TARGET_FIELDS``."""
    spec = {k: v for k, v in _plain(dict(target.export())).items() if k not in _IGNORED_TARGET_FIELDS}
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def device_name(target) -> str:
    """A friendly folder name for ``target`` (``x86-avx512``), else ``<kind>-<mcpu|triple>``."""
    from ..targets import TARGETS, resolve_target  # pylint: disable=import-outside-toplevel

    wanted = target_string(target)
    for name in TARGETS:
        if target_string(resolve_target(name)) == wanted:
            return name
    attrs = {str(k): str(v) for k, v in target.attrs.items()} if target.attrs else {}
    detail = attrs.get("mcpu") or attrs.get("mtriple") or "generic"
    return f"{target.kind.name}-{detail}".replace("/", "_")


def log_key(target) -> dict:
    """The key a log is stored and matched under: target string, TVM version, format version."""
    return {
        "format": TUNING_FORMAT,
        "version": TUNING_FORMAT_VERSION,
        "tvm_version": _tvm_compat.TVM_VERSION,
        "target": target_string(target),
    }


def key_id(key: dict) -> str:
    """A short stable hash of a key (the key's folder name)."""
    blob = json.dumps(key, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def log_path(log_dir, target) -> Path:
    """``<log_dir>/<device>/<key id>/``: the folder holding ``target``'s database."""
    return Path(log_dir) / device_name(target) / key_id(log_key(target))
