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
    """A log that was applied: its folder (the first, when several were applied together, the
    earlier one winning) and how many of the module's functions it scheduled."""

    path: Path
    applied: int
    total: int
    others: tuple = ()  # further folders applied behind ``path``

    def __str__(self) -> str:
        folders = " + ".join(str(p) for p in (self.path, *self.others))
        return f"{folders} ({self.applied} of {self.total} functions)"


def resolve_log_dir(tuning_logs) -> list[Path] | Path | None:
    """``compile``'s ``tuning_logs`` argument: True -> the default roots (``keys.search_log_dirs``:
    the user's, then the shipped ones), a path -> that root, False/None -> none."""
    if tuning_logs is True:
        return keys.search_log_dirs()
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


def _parsed_lines(file: Path) -> list[tuple[str, object]]:
    """``(line, value)`` for each non-blank line of ``file``; ``value`` is None when the line
    is not JSON (a line cut by a killed run)."""
    if not file.is_file():
        return []
    parsed = []
    with open(file, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip():
                continue
            line = line.rstrip("\n") + "\n"
            try:
                parsed.append((line, json.loads(line)))
            except ValueError:
                parsed.append((line, None))
    return parsed


def repair_log(folder: Path) -> int:
    """Drop the unreadable lines of ``folder``'s database (a run killed mid-write leaves a
    truncated last line, and TVM cannot open such a file), keeping every readable record; one
    warning per file names it and how many lines it lost. Returns the lines dropped.

    A record names its workload by line number: the records of a dropped workload go too, and
    the others are renumbered.
    """
    from ..files import write_text_atomic  # pylint: disable=import-outside-toplevel

    workload_file, record_file = folder / keys.WORKLOAD_FILE, folder / keys.RECORD_FILE
    workloads: list[str] = []
    renumber: dict[int, int] = {}  # old line number of a readable workload -> new one
    for old, (line, value) in enumerate(_parsed_lines(workload_file)):
        if isinstance(value, list) and len(value) == 2:
            renumber[old] = len(workloads)
            workloads.append(line)
    records: list[str] = []
    parsed = _parsed_lines(record_file)
    for line, value in parsed:
        if (isinstance(value, list) and len(value) == 2 and isinstance(value[0], int)
                and value[0] in renumber):
            new = renumber[value[0]]
            records.append(line if new == value[0] else
                           json.dumps([new, value[1]], separators=(",", ":")) + "\n")
    dropped = 0
    for file, kept, total in ((workload_file, workloads, len(_parsed_lines(workload_file))),
                              (record_file, records, len(parsed))):
        if total > len(kept):
            write_text_atomic(file, "".join(kept))
            LOG.warning("tuning log %s: skipped %d unreadable line(s) (truncated or not JSON); "
                        "%d kept", file, total - len(kept), len(kept))
            dropped += total - len(kept)
    return dropped


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

    ``log_dir`` is a root or a list of roots (``resolve_log_dir``): the matching log of each is
    applied, a function's records from an earlier root winning over a later one's. No log, a
    foreign one or a broken one leaves ``mod`` unchanged (the default rules apply).
    """
    if log_dir is None:
        return mod, None
    roots = [Path(d) for d in log_dir] if isinstance(log_dir, (list, tuple)) else [Path(log_dir)]
    folders = [f for f in (find_log(root, target) for root in roots) if f is not None]
    if not folders:
        LOG.info("no tuning log for %s in %s: default schedule rules", keys.device_name(target),
                 " or ".join(str(r) for r in roots))
        return mod, None

    before = {gv.name_hint: _tvm_compat.is_scheduled(f) for gv, f in _prim_funcs(mod)}
    try:
        databases = [open_database(folder) for folder in folders]
        database = databases[0] if len(databases) == 1 else _tvm_compat.ordered_union_database(databases)
        new_mod = _tvm_compat.apply_tuning_database(mod, database)
    except Exception as err:  # pylint: disable=broad-except
        LOG.warning("skipped tuning log %s: it could not be applied (%s)",
                    " + ".join(str(f) for f in folders),
                    str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__)
        return mod, None
    applied = sum(1 for gv, f in _prim_funcs(new_mod)
                  if _tvm_compat.is_scheduled(f) and not before.get(gv.name_hint, False))
    result = AppliedLog(folders[0], applied, sum(1 for done in before.values() if not done),
                        tuple(folders[1:]))
    LOG.info("applied tuning log %s", result)
    return new_mod, result


def _prim_funcs(mod):
    return [(gv, f) for gv, f in mod.functions.items() if type(f).__name__ == "PrimFunc"]


def open_database(path: Path):
    """The JSON database in ``path`` (created with its key file by ``tune_model``).

    Records that tensorize name our intrinsics, which must be registered before they load.
    """
    # pylint: disable=import-outside-toplevel
    import schedules.intrin  # noqa: F401  (declares the intrinsics)  pylint: disable=unused-import
    import schedules.intrin.int8_dot  # noqa: F401  pylint: disable=unused-import
    import schedules.intrin.transpose16  # noqa: F401  pylint: disable=unused-import
    from schedules.intrin.exact_shuffle import register_exact_shuffle_intrinsics
    from schedules.intrin.registry import ensure_named_in

    register_exact_shuffle_intrinsics()
    records = path / keys.RECORD_FILE
    ensure_named_in(records.read_text(errors="replace") if records.exists() else "")
    ms = _tvm_compat.meta_schedule()
    return ms.database.JSONDatabase(str(path / keys.WORKLOAD_FILE), str(path / keys.RECORD_FILE),
                                    allow_missing=True, module_equality="structural")
