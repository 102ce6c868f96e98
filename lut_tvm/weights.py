"""Canonical layouts and content fingerprints of layer weights, the key a plan binds layers by.

torch.export and ONNX name weights differently, but both keep their values: a dense weight is
fingerprinted as ``W [D, N]`` (what ``matmul(x, W)`` multiplies by after constant folding) and a
conv weight as ``W [O, I, kh, kw]``.
"""

from __future__ import annotations

import hashlib
from enum import Enum

import numpy as np


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
