"""The container both plan formats use: named NumPy arrays plus JSON metadata in one .npz.

The metadata is UTF-8 JSON stored as a uint8 array under ``__plan__``; files are read with
``allow_pickle=False`` and written atomically (temporary file in the same folder, then rename).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .errors import PlanError
from .files import atomic_path

META_KEY = "__plan__"


def write_npz_with_meta(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``arrays`` and ``meta`` to ``path`` atomically; nothing partial is ever left."""
    payload = dict(arrays)
    payload[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with atomic_path(path, ".npz.tmp") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **payload)
    return path


_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"


def numpy_file_kind(path: Path) -> str | None:
    """``"npz"`` or ``"npy"`` from a file's first bytes, or None when it is neither (then
    ``np.load`` would call a text file "pickled data": name the real problem instead)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError:
        return None
    if head.startswith(_ZIP_MAGIC):
        return "npz"
    if head.startswith(_NPY_MAGIC):
        return "npy"
    return None


def describe_non_numpy_file(path: Path) -> str:
    """What a file that is neither .npy nor .npz looks like, for an error message."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if not head:
        return "is empty"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"is not a NumPy .npy/.npz file (it starts with bytes {head[:8]!r})"
    first = text.splitlines()[0][:40] if text.strip() else ""
    return f"is a text file (starting {first!r}), not a NumPy .npy/.npz file"


def read_npz_with_meta(path: Path, where: str, fmt: str, version: int | tuple[int, ...]) -> tuple[dict, dict]:
    """``(arrays, meta)`` of a file written by ``write_npz_with_meta``, format and version checked.

    ``version``: the one version read, or a tuple of them. ``where`` starts every error message
    (e.g. "plan file 'x.npz'").
    """
    versions = version if isinstance(version, tuple) else (version,)
    if not path.is_file():
        raise PlanError(f"{where} does not exist")
    if numpy_file_kind(path) != "npz":
        problem = ("holds a single array (.npy), not a plan's named arrays (.npz)"
                   if numpy_file_kind(path) == "npy" else describe_non_numpy_file(path))
        raise PlanError(f"{where} {problem}; a plan file is the .npz that `lut-tvm plan` writes")
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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def checked_layer_entries(where: str, meta: dict, required=()) -> list[dict]:
    """The metadata's ``layers`` list, each entry checked for the fields every plan layer has
    (``name``, ``kind``, ``weight_shape``, ``weight_fingerprint``; plus ``required``) and their JSON
    types, so that a hand-edited file gets a PlanError naming the layer and field, never a
    TypeError or a layer called ``#0``."""
    layers = meta.get("layers")
    if not isinstance(layers, list):
        raise PlanError(f"{where}: field 'layers' must be a list of layer entries, "
                        f"got {type(layers).__name__}")
    for index, entry in enumerate(layers):
        if not isinstance(entry, dict):
            raise PlanError(f"{where}: layer entry #{index} must be an object, "
                            f"got {type(entry).__name__}")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise PlanError(f"{where}: layer entry #{index} has no field 'name' (a non-empty string)"
                            if name is None else
                            f"{where}: layer entry #{index}: field 'name' is {name!r}, "
                            "not a non-empty string")
        at = f"{where}, layer {name!r}"
        missing = {"kind", "weight_shape", "weight_fingerprint", *required} - set(entry)
        if missing:
            raise PlanError(f"{at}: missing field(s) {sorted(missing)}")
        if not isinstance(entry["kind"], str):
            raise PlanError(f"{at}: field 'kind' is {entry['kind']!r}, not a string")
        shape = entry["weight_shape"]
        if not isinstance(shape, list) or not shape or not all(_is_int(d) and d > 0 for d in shape):
            raise PlanError(f"{at}: field 'weight_shape' is {shape!r}, not a list of positive "
                            "integers")
        fingerprint = entry["weight_fingerprint"]
        if not isinstance(fingerprint, str) or not fingerprint:
            raise PlanError(f"{at}: field 'weight_fingerprint' is {fingerprint!r}, not a "
                            "non-empty string")
    return layers


def check_int_field(at: str, entry: dict, key: str) -> None:
    """PlanError unless ``entry[key]`` (if present) is a JSON integer."""
    if key in entry and not _is_int(entry[key]):
        raise PlanError(f"{at}: field {key!r} is {entry[key]!r}, not an integer")
