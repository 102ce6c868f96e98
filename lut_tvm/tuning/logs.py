"""Find, check and apply the tuning log matching a target (what ``lut_tvm.compile`` calls)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .. import _tvm_compat
from . import keys

LOG = logging.getLogger("lut_tvm")


@dataclass
class AppliedLog:
    """A log that was applied: its folder and how many of the module's functions it scheduled."""

    path: Path
    applied: int
    total: int

    def __str__(self) -> str:
        return f"{self.path} ({self.applied} of {self.total} functions)"


def resolve_log_dir(tuning_logs) -> Path | None:
    """``compile``'s ``tuning_logs`` argument as a folder: True -> the default, False/None -> none."""
    if tuning_logs is True:
        return keys.default_log_dir()
    if tuning_logs in (False, None):
        return None
    return Path(tuning_logs)


def _read_key(folder: Path) -> dict | None:
    try:
        key = json.loads((folder / keys.KEY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return key if isinstance(key, dict) else None


def key_mismatch(key: dict | None, target) -> str | None:
    """Why a log's key does not fit ``target`` and this TVM, or None when it fits."""
    if key is None:
        return f"its {keys.KEY_FILE} is missing or not JSON"
    wanted = keys.log_key(target)
    for field in ("format", "version", "tvm_version", "target"):
        if key.get(field) != wanted[field]:
            return f"it was made for {field} {key.get(field)!r}, this is {wanted[field]!r}"
    return None


def corrupt_file(folder: Path) -> str | None:
    """The first unreadable database file of ``folder`` as ``'FILE line N: ...'``, else None."""
    for name in (keys.WORKLOAD_FILE, keys.RECORD_FILE):
        file = folder / name
        if not file.is_file():
            return f"{file}: missing"
        with open(file, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    json.loads(line)
                except ValueError as err:
                    return f"{file} line {number}: not valid JSON ({err.msg}; truncated?)"
    return None


def find_log(log_dir, target) -> Path | None:
    """The folder under ``log_dir`` whose key matches ``target``; problems are logged.

    Looks in ``<log_dir>/<device>/``: the folder named by the key's hash first, then any other
    folder whose ``key.json`` matches. Logs for another target or TVM version are skipped
    (INFO); a matching one that is corrupt, or a hash folder with a foreign key, is reported
    (WARNING) and skipped.
    """
    device_dir = Path(log_dir) / keys.device_name(target)
    expected = keys.log_path(log_dir, target)
    if not device_dir.is_dir():
        return None
    candidates = [expected] if expected.is_dir() else []
    candidates += sorted(p for p in device_dir.iterdir() if p.is_dir() and p != expected)
    for folder in candidates:
        problem = key_mismatch(_read_key(folder), target)
        if problem is not None:
            level = logging.WARNING if folder == expected else logging.INFO
            LOG.log(level, "skipped tuning log %s: %s", folder / keys.KEY_FILE, problem)
            continue
        broken = corrupt_file(folder)
        if broken is not None:
            LOG.warning("skipped tuning log %s: %s", folder, broken)
            continue
        return folder
    return None


def apply_tuning_log(mod, target, log_dir):
    """``(mod, AppliedLog | None)``: ``mod``'s PrimFuncs replaced by the matching log's best
    schedules (marked scheduled, so the default rules skip them). Run inside ``with target``.

    No log, a foreign one or a broken one leaves ``mod`` unchanged (the default rules apply).
    """
    if log_dir is None:
        return mod, None
    folder = find_log(log_dir, target)
    if folder is None:
        LOG.info("no tuning log for %s in %s: default schedule rules", keys.device_name(target),
                 log_dir)
        return mod, None
    from .tune import open_database  # pylint: disable=import-outside-toplevel

    before = {gv.name_hint: _tvm_compat.is_scheduled(f) for gv, f in _prim_funcs(mod)}
    try:
        new_mod = _tvm_compat.apply_tuning_database(mod, open_database(folder))
    except Exception as err:  # pylint: disable=broad-except
        LOG.warning("skipped tuning log %s: it could not be applied (%s)", folder,
                    str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__)
        return mod, None
    applied = sum(1 for gv, f in _prim_funcs(new_mod)
                  if _tvm_compat.is_scheduled(f) and not before.get(gv.name_hint, False))
    result = AppliedLog(folder, applied, sum(1 for done in before.values() if not done))
    LOG.info("applied tuning log %s", result)
    return new_mod, result


def _prim_funcs(mod):
    return [(gv, f) for gv, f in mod.functions.items() if type(f).__name__ == "PrimFunc"]
