"""Canonical layouts and content fingerprints of layer weights, the key a plan binds layers by.

torch.export and ONNX name weights differently, but both keep their values: a dense weight is
fingerprinted as ``W [D, N]`` (what ``matmul(x, W)`` multiplies by after constant folding) and a
conv weight as ``W [O, I, kh, kw]``.
"""

from __future__ import annotations

import hashlib
from enum import Enum

import numpy as np

from .errors import PlanError


class LayerKind(str, Enum):
    """The layer types a LUT plan can cover."""

    DENSE = "dense"
    CONV2D = "conv2d"


def fingerprint(weight: np.ndarray) -> str:
    """A short content hash of a weight in its canonical layout (float32, C order, with shape)."""
    canonical = np.ascontiguousarray(weight, dtype=np.float32)
    digest = hashlib.sha256(repr(canonical.shape).encode())
    digest.update(canonical.tobytes())
    return digest.hexdigest()[:16]


def reduction_length(kind: LayerKind, weight_shape) -> int:
    """``D``, the length each input row is split into codebooks along."""
    if kind is LayerKind.DENSE:
        return int(weight_shape[0])
    return int(np.prod(weight_shape[1:]))


def output_length(kind: LayerKind, weight_shape) -> int:
    """``N``, the number of output features (dense) or channels (conv)."""
    return int(weight_shape[1] if kind is LayerKind.DENSE else weight_shape[0])


def as_dense_matrix(kind: LayerKind, weight: np.ndarray) -> np.ndarray:
    """The weight as the ``[D, N]`` matrix its im2col'd inputs are multiplied by."""
    if kind is LayerKind.DENSE:
        return weight
    return weight.reshape(weight.shape[0], -1).T


def checked_layer_kind(where: str, kind, weight_shape) -> LayerKind:
    """``kind`` as a LayerKind, with ``weight_shape`` of its rank; PlanError starting ``where``."""
    try:
        layer_kind = LayerKind(kind)
    except ValueError:
        raise PlanError(f"{where}: field 'kind' is {kind!r}, not one of "
                        f"{[k.value for k in LayerKind]}") from None
    rank = 2 if layer_kind is LayerKind.DENSE else 4
    if len(weight_shape) != rank or min(weight_shape) < 1:
        raise PlanError(f"{where}: field 'weight_shape' {list(weight_shape)} is not a "
                        f"{rank}-D {layer_kind.value} weight shape")
    return layer_kind


def check_distinct_weights(label: str, layers) -> None:
    """Validate each of a plan's ``layers`` and that no two bind the same weight (fingerprint)."""
    seen: dict[str, str] = {}
    for layer in layers:
        layer.validate()
        if layer.weight_fingerprint in seen:
            raise PlanError(f"{label} layers {seen[layer.weight_fingerprint]!r} and "
                            f"{layer.name!r} bind the same weight (field 'weight_fingerprint')")
        seen[layer.weight_fingerprint] = layer.name
