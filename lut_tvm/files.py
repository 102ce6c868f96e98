"""Atomic file writes: a temp file beside the target, then ``os.replace`` (never a half-written file)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_text_atomic(path, text: str) -> Path:
    """``text`` (UTF-8) at ``path``, its folder created; mode 0644 like a plain ``open``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, suffix=".tmp",
                                     delete=False) as tmp:
        tmp.write(text)
    os.chmod(tmp.name, 0o644)  # NamedTemporaryFile makes 0600 files
    os.replace(tmp.name, path)
    return path


def write_json_atomic(path, payload, indent: int = 1) -> Path:
    """``payload`` as indented JSON at ``path`` (values JSON cannot hold written with ``str``)."""
    return write_text_atomic(path, json.dumps(payload, indent=indent, default=str))
