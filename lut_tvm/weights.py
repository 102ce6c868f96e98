"""Canonical layouts and content fingerprints of layer weights, the key a plan binds layers by.

torch.export and ONNX name weights differently, but both keep their values: a dense weight is
fingerprinted as ``W [D, N]`` (what ``matmul(x, W)`` multiplies by after constant folding) and a
conv weight as ``W [O, I, kh, kw]``.
"""

from __future__ import annotations

import hashlib
import logging
from enum import Enum

import numpy as np

from .errors import PlanError

LOG = logging.getLogger("lut_tvm")


class LayerKind(str, Enum):
    """The layer types a LUT plan can cover."""

    DENSE = "dense"
    CONV2D = "conv2d"


def canonical_weight(kind, weight) -> np.ndarray:
    """A framework weight array in the layout plans fingerprint, float32 C order.

    ``kind`` DENSE: torch's ``Linear.weight [N, D]`` becomes ``W [D, N]`` (its transpose); CONV2D:
    ``[O, I, kh, kw]`` as is, and a Conv1d weight ``[O, I, k]`` becomes the ``[O, I, 1, k]`` weight of
    the equivalent ``Conv2d((1, k))``.
    """
    kind = LayerKind(kind)
    array = np.asarray(weight, dtype=np.float32)
    if kind is LayerKind.DENSE:
        if array.ndim != 2:
            raise PlanError(f"a dense weight is 2-D [N, D], got shape {list(array.shape)}")
        return np.ascontiguousarray(array.T)
    if array.ndim == 3:
        array = array[:, :, None, :]
    if array.ndim != 4:
        raise PlanError(f"a conv weight is 4-D [O, I, kh, kw] (or 3-D for conv1d), got shape {list(array.shape)}")
    return np.ascontiguousarray(array)


def not_lut_reason(kind, *, groups: int = 1, padding_mode: str = "zeros", layouts=("NCHW", "OIHW"),
                   dtype="float32", grouped: bool = False) -> str | None:
    """Why a layer cannot become a LUT (or an exact LUT), or None when it can: the one rule that
    the graph's layer discovery (``relay_passes.layer_sites``) and the torch module walks of
    ``lut_tvm.train`` and ``lut_tvm.exact`` apply. Dense layers always can (float32 weights);
    convs need zero padding, NCHW data / OIHW weights, and groups = 1 unless ``grouped`` (LUT-NN
    covers grouped and depthwise convs with per-group codebooks; the exact mode does not)."""
    if str(dtype).removeprefix("torch.") != "float32":
        return f"weight dtype {dtype} is not float32"
    if LayerKind(kind) is LayerKind.DENSE:
        return None
    if int(groups) != 1 and not grouped:
        return f"grouped conv (groups={int(groups)}; only groups=1 convs become LUTs here)"
    if padding_mode != "zeros":
        return f"padding_mode {padding_mode!r} is not zero padding"
    if tuple(layouts) != ("NCHW", "OIHW"):
        return f"layout {layouts[0]}/{layouts[1]} is not NCHW/OIHW"
    return None


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


def as_dense_matrix(kind: LayerKind, weight: np.ndarray, groups: int = 1) -> np.ndarray:
    """The weight as the ``[D, N]`` matrix its im2col'd inputs are multiplied by (a grouped conv's:
    ``grouped_dense_matrix``)."""
    if kind is LayerKind.DENSE:
        return weight
    if groups > 1:
        return grouped_dense_matrix(weight, groups)
    return weight.reshape(weight.shape[0], -1).T


def ungrouped_weight(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv weight ``[O, I/G, kh, kw]`` as the ``[O, I, kh, kw]`` weight of the equivalent
    ungrouped conv: output ``o`` of group ``g`` keeps its weights on input channels
    ``[g*I/G, (g+1)*I/G)``, zeros elsewhere (block diagonal)."""
    out_channels, per_in = weight.shape[:2]
    per_out = out_channels // groups
    full = np.zeros((out_channels, per_in * groups, *weight.shape[2:]), dtype=weight.dtype)
    for group in range(groups):
        outs, ins = slice(group * per_out, (group + 1) * per_out), slice(group * per_in, (group + 1) * per_in)
        full[outs, ins] = weight[outs]
    return full


def grouped_dense_matrix(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv weight ``[O, I/G, kh, kw]`` as the block-diagonal ``[G*D_g, O]`` matrix that
    the full im2col rows (``D = I*kh*kw``, group-major) are multiplied by: group ``g``'s rows
    ``[g*D_g, (g+1)*D_g)`` meet only its outputs ``[g*O/G, (g+1)*O/G)``; zeros elsewhere."""
    return ungrouped_weight(weight, groups).reshape(weight.shape[0], -1).T


def default_sub_len_fits(policy, name: str, kind, weight_shape, groups: int = 1) -> bool:
    """False (with a warning) for a layer whose default V under ``policy`` (a ``policy.PlanPolicy``;
    not set for the layer by name, the layer not asked for by ``only``) does not divide its
    reduction length (per group for a grouped conv): the layer stays dense rather than failing the
    plan (a Linear of 13 inputs under V = 16). True otherwise (``checked_sub_len`` names any other
    misfit: a V given for the layer by name)."""
    if name in policy.sub_len_overrides or (policy.only is not None and name in policy.only):
        return True
    sub_len, depth = policy.sub_len(name, kind, weight_shape), reduction_length(kind, weight_shape)
    if depth % sub_len == 0:
        return True
    what = f"grouped conv (groups = {groups})" if groups > 1 else LayerKind(kind).value
    LOG.warning("layer %s (%s) stays dense: V = %d does not divide its reduction length D = %d "
                "(give it a V that does: --sub-len %s=V, or sub_len_overrides in Python)", name, what,
                sub_len, depth, name)
    return False

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
