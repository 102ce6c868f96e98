"""The exact (LUT-NA) plan: per layer, the weight it binds to, its bits and quantization scales.

Like ``lut_tvm.plan`` (a separate format, so neither reader accepts the other's file): an
``.npz`` holding each layer's per-channel weight scales as ``layer<i>.w_scale`` (float32 [N])
and the metadata as UTF-8 JSON in ``__plan__`` (format, version, provenance, and per
layer: name, kind, weight_shape, weight_fingerprint, bits, act_scale, piece_bits); read with
``allow_pickle=False``. Layers bind by ``lut_tvm.weights.fingerprint`` of the (pruned) float
weight in its canonical layout, so a plan made from one export applies to another.

The quantized weight is not stored: it is ``reference.quantize_weight(W, bits, w_scale)`` of
the bound weight (deterministic), so the plan cannot disagree with the model it binds to.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import PlanError
from ..npz_meta import check_int_field, checked_layer_entries, read_npz_with_meta, write_npz_with_meta
from ..plan import PlanKind
from ..weights import LayerKind, as_dense_matrix, checked_layer_kind, fingerprint, output_length
from .reference import MAX_BITS, MIN_BITS, quantize_weight, weight_scales

EXACT_PLAN_FORMAT = "lut_tvm.exact_plan"
EXACT_PLAN_VERSION = 1
PIECE_BITS = (1, 2, 4)


@dataclass
class ExactLayerPlan:
    """One quantized layer: ``bits``-bit weights with per-channel ``w_scale``, int8 inputs."""

    name: str
    kind: LayerKind
    weight_shape: tuple[int, ...]
    weight_fingerprint: str
    bits: int
    act_scale: float
    w_scale: np.ndarray
    piece_bits: int = 1

    @classmethod
    def from_weight(cls, name: str, kind: LayerKind, weight: np.ndarray, bits: int,
                    act_scale: float, piece_bits: int = 1) -> "ExactLayerPlan":
        """A plan entry for ``weight`` (canonical layout) with scales computed from it."""
        kind = LayerKind(kind)
        matrix = as_dense_matrix(kind, np.asarray(weight, dtype=np.float32))
        return cls(name, kind, tuple(int(d) for d in weight.shape), fingerprint(weight), int(bits),
                   float(np.float32(act_scale)), weight_scales(matrix, bits), piece_bits)

    def quantized_weight(self, weight: np.ndarray) -> np.ndarray:
        """``Wq [D, N]`` int8 of the bound weight (checked against the fingerprint)."""
        if fingerprint(weight) != self.weight_fingerprint:
            raise PlanError(f"exact plan layer {self.name!r}: the weight's fingerprint "
                            f"{fingerprint(weight)} is not {self.weight_fingerprint}")
        matrix = as_dense_matrix(LayerKind(self.kind), np.asarray(weight, dtype=np.float32))
        return quantize_weight(matrix, self.bits, self.w_scale)[0]

    def validate(self) -> None:
        """Raise PlanError naming this layer and the field that is wrong."""
        where = f"exact plan layer {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise PlanError(f"{where}: field 'name' must be a non-empty string")
        kind = checked_layer_kind(where, self.kind, self.weight_shape)
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or \
                not MIN_BITS <= self.bits <= MAX_BITS:
            raise PlanError(f"{where}: field 'bits' is {self.bits!r}; must be an integer in "
                            f"[{MIN_BITS}, {MAX_BITS}]")
        if self.piece_bits not in PIECE_BITS:
            raise PlanError(f"{where}: field 'piece_bits' is {self.piece_bits!r}, not one of "
                            f"{list(PIECE_BITS)}")
        if not isinstance(self.act_scale, (int, float)) or not math.isfinite(self.act_scale) \
                or self.act_scale <= 0:
            raise PlanError(f"{where}: field 'act_scale' is {self.act_scale!r}; must be a "
                            "finite positive number")
        scale = self.w_scale
        channels = output_length(kind, self.weight_shape)
        if not isinstance(scale, np.ndarray) or scale.dtype != np.float32 or scale.shape != (channels,):
            raise PlanError(f"{where}: field 'w_scale' must be float32 of shape [{channels}] "
                            f"(got {getattr(scale, 'dtype', type(scale))} "
                            f"{list(getattr(scale, 'shape', []))})")
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise PlanError(f"{where}: field 'w_scale' must be finite and positive")
        if not isinstance(self.weight_fingerprint, str) or not self.weight_fingerprint:
            raise PlanError(f"{where}: field 'weight_fingerprint' must be a non-empty string")


@dataclass
class ExactPlan(PlanKind):
    """All quantized layers of one model, plus free-form provenance (calibration, search)."""

    FORMAT = EXACT_PLAN_FORMAT
    LABEL = "exact plan"
    KERNELS = "exact LUT kernels"

    layers: list[ExactLayerPlan]
    provenance: dict = field(default_factory=dict)
    # the look-up form compile uses (relay_passes.exact_layer_builder.LOOKUPS); not stored in the file
    lookup: str = "auto"

    def bits_per_layer(self) -> dict[str, int]:
        """Each layer's weight bits, by layer name."""
        return {layer.name: layer.bits for layer in self.layers}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan atomically to ``path`` (an ``.npz``)."""
        self.validate()
        path = Path(path)
        meta = {
            "format": EXACT_PLAN_FORMAT,
            "version": EXACT_PLAN_VERSION,
            "provenance": self.provenance,
            "layers": [
                {"name": layer.name, "kind": LayerKind(layer.kind).value,
                 "weight_shape": list(layer.weight_shape),
                 "weight_fingerprint": layer.weight_fingerprint, "bits": layer.bits,
                 "act_scale": float(layer.act_scale), "piece_bits": layer.piece_bits}
                for layer in self.layers
            ],
        }
        arrays = {f"layer{i}.w_scale": layer.w_scale for i, layer in enumerate(self.layers)}
        return write_npz_with_meta(path, arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExactPlan":
        """Read and validate a plan file; PlanError names the file, layer and field at fault."""
        path = Path(path)
        where = f"exact plan file {str(path)!r}"
        arrays, meta = read_npz_with_meta(path, where, EXACT_PLAN_FORMAT, EXACT_PLAN_VERSION)
        layers = []
        for index, entry in enumerate(checked_layer_entries(where, meta, ("bits", "act_scale"))):
            name = entry["name"]
            check_int_field(f"{where}, layer {name!r}", entry, "piece_bits")
            key = f"layer{index}.w_scale"
            if key not in arrays:
                raise PlanError(f"{where}, layer {name!r}: missing array {key!r}")
            layers.append(ExactLayerPlan(
                name=name, kind=entry["kind"],
                weight_shape=tuple(int(d) for d in entry["weight_shape"]),
                weight_fingerprint=str(entry["weight_fingerprint"]), bits=entry["bits"],
                act_scale=entry["act_scale"], w_scale=arrays[key],
                piece_bits=entry.get("piece_bits", 1)))
        return cls.from_file_layers(where, layers, meta)
