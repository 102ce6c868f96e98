"""Helpers shared by the lut-tvm subcommands: reading arrays and the model argument's help."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError

MODEL_HELP = "model file: .onnx, or a torch.export .pt2 (torch.export.save)"


def load_array(path: str, what: str, key: str | None = None) -> np.ndarray:
    """An array from a .npy, or from a .npz (``key`` or its only/first array)."""
    file = Path(path)
    if not file.is_file():
        raise ModelLoadError(f"{what} file {path!r} does not exist")
    try:
        data = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ModelLoadError(f"{what} file {path!r} is not a .npy/.npz array: {err}") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            names = data.files
            if key is not None and key not in names:
                raise ModelLoadError(f"{what} file {path!r} has no array {key!r} (has {names})")
            return data[key or names[0]]
    return data


def parse_overrides(pairs: list[str]) -> dict[str, int]:
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not value.isdigit():
            raise argparse.ArgumentTypeError(f"--sub-len expects LAYER=V, got {pair!r}")
        overrides[name] = int(value)
    return overrides
