"""The container both plan formats use: named NumPy arrays plus JSON metadata in one .npz.

The metadata is UTF-8 JSON stored as a uint8 array under ``__plan__``; files are read with
``allow_pickle=False`` and written atomically (temporary file in the same folder, then rename).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import PlanError

META_KEY = "__plan__"


def write_npz_with_meta(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``arrays`` and ``meta`` to ``path`` atomically; nothing partial is ever left."""
    payload = dict(arrays)
    payload[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz.tmp", delete=False) as tmp:
        try:
            np.savez(tmp, **payload)
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)
    return path


def read_npz_with_meta(path: Path, where: str, fmt: str, version: int | tuple[int, ...]) -> tuple[dict, dict]:
    """``(arrays, meta)`` of a file written by ``write_npz_with_meta``, format and version checked.

    ``version``: the one version read, or a tuple of them. ``where`` starts every error message
    (e.g. "plan file 'x.npz'").
    """
    versions = version if isinstance(version, tuple) else (version,)
    if not path.is_file():
        raise PlanError(f"{where} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array (.npy), not a plan's named arrays")
        with loaded as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, TypeError, zipfile.BadZipFile) as err:
        raise PlanError(f"{where} is not a readable .npz: {err}") from None
    if META_KEY not in arrays:
        raise PlanError(f"{where} has no '{META_KEY}' metadata entry")
    try:
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PlanError(f"{where}: metadata is not JSON: {err}") from None
    if meta.get("format") != fmt:
        raise PlanError(f"{where}: field 'format' is {meta.get('format')!r}, expected {fmt!r}")
    found = meta.get("version")
    if type(found) is not int or found not in versions:  # JSON ints only: not "1", true or 1.5
        raise PlanError(f"{where}: version {found!r} is not supported (this lut_tvm reads "
                        f"version {' or '.join(map(str, versions))})")
    return arrays, meta
