"""A resumable on-disk cache of measurements: one JSON file per kind, rewritten atomically per entry."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..files import write_json_atomic


def digest(*parts) -> str:
    """A short stable hash of ``parts`` (strings, numbers, or NumPy arrays by their bytes)."""
    sha = hashlib.sha256()
    for part in parts:
        data = part.tobytes() + repr((part.shape, str(part.dtype))).encode() if hasattr(part, "tobytes") \
            else repr(part).encode()
        sha.update(data)
        sha.update(b"\0")
    return sha.hexdigest()[:16]


class MeasurementCache:
    """``key -> JSON value`` in ``<folder>/<name>.json``; each ``put`` is written at once (atomic),
    so an interrupted run resumes from what it measured. ``folder=None`` keeps it in memory."""

    def __init__(self, folder, name: str):
        self.path = Path(folder) / f"{name}.json" if folder is not None else None
        self.entries: dict = {}
        if self.path is not None and self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except ValueError:
                self.entries = {}  # a file that is not ours: start over (it is rewritten on put)
        self.new = 0  # entries measured in this run

    def get(self, key: str):
        return self.entries.get(key)

    def put(self, key: str, value) -> None:
        self.entries[key] = value
        self.new += 1
        if self.path is not None:
            write_json_atomic(self.path, self.entries)
