"""Helpers shared by the lut-tvm subcommands: checking paths before the slow imports, reading
arrays, progress lines and the model argument's help."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import LutTvmError, ModelLoadError
from ..npz_meta import describe_non_numpy_file, numpy_file_kind
from ..steps import Progress

MODEL_HELP = "model file: .onnx, or a torch.export .pt2 (torch.export.save)"


def load_array(path: str, what: str, key: str | None = None) -> np.ndarray:
    """An array from a .npy, or from a .npz (``key`` or its only/first array)."""
    file = Path(path)
    if not file.is_file():
        raise ModelLoadError(f"{what} file {path!r} does not exist")
    if numpy_file_kind(file) is None:
        raise ModelLoadError(f"{what} file {path!r} {describe_non_numpy_file(file)} "
                             "(save arrays with numpy.save)")
    try:
        data = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ModelLoadError(f"{what} file {path!r} is not a .npy/.npz array: {err}") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            names = data.files
            if key is not None and key not in names:
                raise ModelLoadError(f"{what} file {path!r} has no array {key!r} (has {names})")
            data = data[key or names[0]]
    _refuse_non_finite(data, f"{what} file {path!r}")
    return data


def _refuse_non_finite(array: np.ndarray, where: str) -> None:
    """ModelLoadError naming ``where`` if a float ``array`` holds NaN or infinity (the model's
    checks would refuse it later, after the slow imports, without naming the file)."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ModelLoadError(f"{where} holds {bad} NaN/infinite value(s) of {array.size}")


def parse_overrides(pairs: list[str], flag: str = "--sub-len", value_name: str = "V") -> dict[str, int]:
    """``{layer: int}`` from ``LAYER=N`` arguments of ``flag``."""
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not value.isdigit():
            raise argparse.ArgumentTypeError(f"{flag} expects LAYER={value_name}, got {pair!r}")
        overrides[name] = int(value)
    return overrides


def _unwritable_folder(path: Path) -> Path | None:
    """The nearest existing folder of ``path`` if a file cannot be created in it, else None
    (tried with a temporary file: permission bits do not tell for root or a read-only mount)."""
    folder = path.parent.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError:
        return folder


def check_paths(inputs: dict[str, str | None], outputs: dict[str, str | os.PathLike],
                folders: dict[str, str | None] | None = None) -> None:
    """Before any slow import: every input file (``{what: path}``, None skipped) and input folder
    (``folders``) exists; no output (``{what: path}``) is one of the inputs (compared resolved: a
    link or ``./`` spelling counts) or a folder; each output's folder is writable (or creatable)."""
    for what, path in (folders or {}).items():
        if path is not None and not Path(path).is_dir():
            raise LutTvmError(f"{what} folder {str(path)!r} does not exist"
                              + (" (it is a file)" if Path(path).exists() else ""))
    resolved = {}
    for what, path in inputs.items():
        if path is None:
            continue
        if not Path(path).is_file():
            raise LutTvmError(f"{what} file {str(path)!r} does not exist"
                              + (" (it is a folder)" if Path(path).is_dir() else ""))
        resolved[Path(path).resolve()] = (what, path)
    for what, path in outputs.items():
        out = Path(path)
        clash = resolved.get(out.resolve())
        if clash is not None:
            raise LutTvmError(f"{what} {str(out)!r} is the {clash[0]} file {str(clash[1])!r}: "
                              "writing it would destroy the input; choose another -o")
        if out.is_dir():
            raise LutTvmError(f"{what} {str(out)!r} is a folder; give a file name")
        locked = _unwritable_folder(out)
        if locked is not None:
            raise LutTvmError(f"cannot write {what} {str(out)!r}: folder {str(locked)!r} is not "
                              "writable")


def progress_printer(args):
    """The ``progress`` hook of ``compile`` / ``build_kmeans_plan``: one line per stage on stderr
    (``lut-tvm CMD: ...``, through ``lut_tvm.steps.Progress``), or None with --quiet."""
    if getattr(args, "quiet", False):
        return None
    return Progress(prefix=f"lut-tvm {args.command}: ").say


def add_quiet_argument(parser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress lines on stderr (results and errors still print)")
