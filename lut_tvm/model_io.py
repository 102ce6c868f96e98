"""A compiled model's inputs and outputs: inputs checked against its ArtifactInfo (count, shape,
finite values), the VM's results flattened to NumPy arrays; shared by local and remote models."""

from __future__ import annotations

import numpy as np

from .errors import ArtifactError


def checked_inputs(info, inputs) -> list[np.ndarray]:
    """``inputs`` as float32 arrays, one per ``info.input_names``, each of its ``input_shapes``."""
    if len(inputs) != len(info.input_names):
        raise ArtifactError(f"model takes {len(info.input_names)} input(s) "
                            f"{info.input_names}, got {len(inputs)}")
    arrays = []
    for name, shape, value in zip(info.input_names, info.input_shapes, inputs):
        array = np.asarray(value, dtype=np.float32)
        if list(array.shape) != list(shape):
            raise ArtifactError(f"input {name!r} has shape {list(array.shape)}, "
                                f"the model was compiled for {list(shape)}")
        arrays.append(array)
    return arrays


def refuse_non_finite(info, arrays: list[np.ndarray]) -> None:
    """Raise ArtifactError naming the first input that holds NaN or infinity: a LUT layer encodes
    them to some centroid and would return finite, meaningless outputs where PyTorch gives NaN."""
    for name, array in zip(info.input_names, arrays):
        if not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise ArtifactError(
                f"input {name!r} holds {bad} NaN/infinite value(s) of {array.size}; a LUT "
                "model would map them to finite outputs, so they are refused (clean the "
                "input, or pass check_finite=False)")


def flatten_outputs(result) -> list[np.ndarray]:
    """The VM's result (a tensor or nested tuples of tensors) as a flat list of NumPy arrays."""
    if hasattr(result, "numpy"):
        return [result.numpy()]
    return [array for item in result for array in flatten_outputs(item)]
