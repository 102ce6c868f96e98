"""The LUT plan: per layer, the weight it binds to, K, V, the centroids and optionally free tables;
a versioned .npz file.

A plan file is an ``.npz`` holding each layer's centroids as ``layer<i>.centroids``, a layer's free
tables (MADDNESS's ridge refit) as ``layer<i>.tables``, and the metadata as UTF-8 JSON in
``__plan__``; it is read with ``allow_pickle=False``. Loading checks every field and names the
layer and field at fault. Each layer entry records K and V (``num_centroids``,
``sub_vector_len``; optional, older files lack them) so that centroids with swapped axes, which
keep their size and C*V, are refused.

Version 1 carries centroids only: the compiler builds a layer's tables as ``P.W`` from the model's
weight. Version 2 adds the optional ``tables`` (``[C, K, N]`` float32, real-valued; the compiler
quantizes them as it does ``P.W``); a plan is written as version 2 only when a layer has tables, so
that a reader of version 1 refuses it rather than silently compiling ``P.W``. Version 3 adds table
scale granularities other than one per layer (``TableQuant``, field ``table_quant``): a plan with
such a layer is written as version 3, so that older readers refuse it rather than compile it with
one scale per layer. Version 4 adds grouped and depthwise convs (field ``groups``, the conv's
group count G; the weight is ``[O, I/G, kh, kw]`` and the centroids ``[G * C_g, K, V]``, each
group's codebooks in turn): a plan with such a layer is written as version 4, so that older
readers refuse it rather than compile a grouped conv as an ungrouped one. Version 5 adds a layer's
``mode``: ``lut`` or ``int8_dense`` (a dense layer run as an int8 matmul, ``lut_tvm.int8_reference``;
no centroids, K or V), written as version 5 so that older readers refuse it. Version 6 adds a LUT layer's
``encode``: ``float`` or ``int8`` (integer distances, ``lut_tvm.int8_encode_reference``; dense layers
only for now), written as version 6 so that older readers refuse it rather than encode in float.
All six load; versions 1 and 2 only with ``int8_per_layer``, versions before 4 only with ``groups`` 1,
before 5 only with ``mode`` lut, before 6 only with ``encode`` float (``lut_tvm.plan_fields``).
Version 7 adds an int8 dense layer's ``act_bits``: 8 (activations 0..255) or 7 (0..127, the exact
``vpmaddubsw`` kernel on CPUs without VNNI; ``lut_tvm.int8_reference``), written as version 7 when a
layer has 7 so that older readers refuse it rather than quantize to 8 bits; older files load as 8.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import ClassVar

import numpy as np

from .errors import PlanError
from .npz_meta import META_KEY, checked_layer_entries, read_npz_with_meta, write_npz_with_meta
from .plan_fields import (DEFAULT_ACT_BITS, PLAN_VERSION, PLAN_VERSION_ACT_BITS,  # noqa: F401 (re-exported)
                          PLAN_VERSION_ENCODE, PLAN_VERSION_GROUPS, PLAN_VERSION_MODES, PLAN_VERSION_TABLE_QUANT,
                          PLAN_VERSION_TABLES, SUPPORTED_VERSIONS, EncodeMode, check_layer_shape_fields,
                          checked_act_bits, checked_choice, load_act_bits, load_choice, load_groups, load_tables)
from .weights import (LayerKind, check_distinct_weights, checked_layer_kind, output_length,
                      reduction_length)

PLAN_FORMAT = "lut_tvm.plan"


class LayerMode(str, Enum):
    """What a plan layer compiles to: LUT kernels, or (dense only) an int8 matmul."""

    LUT = "lut"
    INT8_DENSE = "int8_dense"


class TableQuant(str, Enum):
    """How the tables are quantized: INT8 with one scale per layer or one per output column."""

    INT8_PER_LAYER = "int8_per_layer"
    INT8_PER_COLUMN = "int8_per_column"

    @property
    def granularity(self) -> str:
        """The ``granularity`` argument of ``reference.quantize_tables``."""
        return {TableQuant.INT8_PER_LAYER: "layer", TableQuant.INT8_PER_COLUMN: "column"}[self]


@dataclass
class LayerPlan:
    """One layer's LUT: which weight it replaces and the centroids ``[C, K, V]`` it encodes with.

    ``tables`` (optional, ``[C, K, N]`` float32): free real-valued tables (e.g. MADDNESS's ridge
    refit) that the compiler quantizes in place of ``P.W``; the weight then only binds the layer.
    ``groups`` (conv only): the conv's group count G; the weight is then ``[O, I/G, kh, kw]``, the
    centroids ``[G * C_g, K, V]`` (group-major, ``C_g * V = I/G * kh * kw``) and free tables
    ``[C, K, O/G]`` (codebook ``c`` of group ``c // C_g`` feeds that group's outputs only).
    ``mode``: ``LayerMode.INT8_DENSE`` for a dense layer run as an int8 matmul instead (no
    centroids, tables or groups: build it with ``LayerPlan.int8_dense``).
    ``encode``: ``EncodeMode.INT8`` computes the codes by integer distances (dense layers only).
    ``act_bits`` (int8 dense only): the activations' width, 8 (0..255) or 7 (0..127).
    """

    name: str
    kind: LayerKind
    weight_shape: tuple[int, ...]
    weight_fingerprint: str
    centroids: np.ndarray | None
    table_quant: TableQuant = TableQuant.INT8_PER_LAYER
    tables: np.ndarray | None = None
    groups: int = 1
    mode: LayerMode = LayerMode.LUT
    encode: EncodeMode = EncodeMode.FLOAT
    act_bits: int = DEFAULT_ACT_BITS

    @classmethod
    def int8_dense(cls, name: str, weight_shape, weight_fingerprint: str,
                   act_bits: int = DEFAULT_ACT_BITS) -> "LayerPlan":
        """The plan entry of a dense layer (weight ``[D, N]``, as ``LayerSite.weight``) run in int8,
        its activations quantized to ``act_bits`` (8 or 7)."""
        return cls(name, LayerKind.DENSE, tuple(int(d) for d in weight_shape), weight_fingerprint,
                   None, mode=LayerMode.INT8_DENSE, act_bits=act_bits)

    is_int8 = property(lambda self: self.mode == LayerMode.INT8_DENSE, doc="Whether the layer runs in int8.")

    @property
    def num_codebooks(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def num_centroids(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def sub_vector_len(self) -> int:
        return int(self.centroids.shape[2])

    def validate(self) -> None:
        """Raise PlanError naming this layer and the field that is wrong."""
        where = f"plan layer {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise PlanError(f"{where}: field 'name' must be a non-empty string")
        kind = checked_layer_kind(where, self.kind, self.weight_shape)
        if self._validate_mode(where, kind):
            return
        cents = self.centroids
        if not isinstance(cents, np.ndarray) or cents.ndim != 3:
            raise PlanError(f"{where}: field 'centroids' must be a 3-D array [C, K, V]")
        if cents.dtype != np.float32 or not np.isfinite(cents).all():
            raise PlanError(f"{where}: field 'centroids' must be finite float32 "
                            f"(got {cents.dtype})")
        groups = self._checked_groups(where, kind)
        depth = reduction_length(kind, self.weight_shape) * groups
        if self.num_codebooks * self.sub_vector_len != depth:
            per_group = f" (groups = {groups})" if groups > 1 else ""
            raise PlanError(f"{where}: field 'centroids' has C*V = {self.num_codebooks}*"
                            f"{self.sub_vector_len}, but the weight's reduction length D is {depth}{per_group}")
        if self.num_codebooks % groups:
            raise PlanError(f"{where}: field 'centroids' has C = {self.num_codebooks} codebooks, not a "
                            f"multiple of groups = {groups} (a codebook may not span two groups)")
        if not 2 <= self.num_centroids <= 256:
            raise PlanError(f"{where}: field 'centroids' has K = {self.num_centroids}; "
                            "K must be in [2, 256] (codes are uint8)")
        try:
            TableQuant(self.table_quant)
        except ValueError:
            raise PlanError(f"{where}: field 'table_quant' is {self.table_quant!r}, not one of "
                            f"{[q.value for q in TableQuant]}") from None
        if self.tables is not None:
            self._validate_tables(where, kind)
        if checked_choice(where, "encode", EncodeMode, self.encode) is not EncodeMode.FLOAT and kind is not LayerKind.DENSE:
            raise PlanError(f"{where}: field 'encode' is {EncodeMode(self.encode).value}, but the layer is "
                            f"{kind.value} (only dense layers have the int8 encode)")

    def _validate_mode(self, where: str, kind: LayerKind) -> bool:
        """Check ``mode``; True for an int8 dense layer (then fully checked: nothing else applies)."""
        mode = checked_choice(where, "mode", LayerMode, self.mode)
        if mode is LayerMode.LUT:
            if self.act_bits != DEFAULT_ACT_BITS:
                raise PlanError(f"{where}: field 'act_bits' must be absent in mode {mode.value}")
            return False
        checked_act_bits(where, self.act_bits)
        if kind is not LayerKind.DENSE:
            raise PlanError(f"{where}: field 'mode' is {mode.value}, but the layer is {kind.value} "
                            "(only dense layers run in int8)")
        extra = [name for name, present in (("centroids", self.centroids is not None), ("tables", self.tables is not None),
                                            ("groups", self.groups != 1), ("table_quant", self.table_quant != "int8_per_layer"),
                                            ("encode", self.encode != "float"))
                 if present]
        if extra:
            raise PlanError(f"{where}: field {extra[0]!r} must be absent in mode {mode.value}")
        return True

    def _checked_groups(self, where: str, kind: LayerKind) -> int:
        groups = self.groups
        if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise PlanError(f"{where}: field 'groups' is {groups!r}, not a positive integer")
        if groups > 1 and kind is not LayerKind.CONV2D:
            raise PlanError(f"{where}: field 'groups' is {groups}, but only a conv2d layer has groups")
        if self.weight_shape[0] % groups:
            raise PlanError(f"{where}: field 'groups' {groups} does not divide the weight's "
                            f"{self.weight_shape[0]} output channels")
        return int(groups)

    def _validate_tables(self, where: str, kind: LayerKind) -> None:
        tables = self.tables
        expected = [self.num_codebooks, self.num_centroids,
                    output_length(kind, self.weight_shape) // int(self.groups)]
        if not isinstance(tables, np.ndarray) or tables.ndim != 3:
            raise PlanError(f"{where}: field 'tables' must be a 3-D array [C, K, N] = {expected}")
        if list(tables.shape) != expected:
            raise PlanError(f"{where}: field 'tables' is {list(tables.shape)}, not [C, K, N] = {expected} "
                            "(C, K of the centroids, N of the weight_shape)")
        if tables.dtype != np.float32 or not np.isfinite(tables).all():
            raise PlanError(f"{where}: field 'tables' must be finite float32 (got {tables.dtype})")


class PlanKind:
    """What the compiler needs of every plan kind (``Plan``, ``exact.plan.ExactPlan``): layers that
    each bind one weight by fingerprint (``name``, ``kind``, ``weight_shape``,
    ``weight_fingerprint``, ``validate()``), free-form provenance, and a file format of its own.

    A subclass is a dataclass with ``layers`` and ``provenance`` and sets the class constants.
    """

    FORMAT: ClassVar[str]  # the metadata's ``format`` field: a file loads as the kind that names it
    LABEL: ClassVar[str]  # how messages name a plan of this kind ("plan", "exact plan")
    KERNELS: ClassVar[str]  # what its layers compile to, for log lines ("LUT kernels")

    layers: list
    provenance: dict

    def by_fingerprint(self) -> dict:
        """Layers keyed by the fingerprint of the weight they bind to."""
        return {layer.weight_fingerprint: layer for layer in self.layers}

    def validate(self) -> None:
        """Validate every layer and that no two layers bind the same weight."""
        check_distinct_weights(self.LABEL, self.layers)

    @classmethod
    def from_file_layers(cls, where: str, layers: list, meta: dict):
        """The plan read from a file: ``layers`` (checked field by field) and the metadata's
        provenance, validated as a whole; PlanError names the file (``where``)."""
        provenance = meta.get("provenance", {})
        if not isinstance(provenance, dict):
            raise PlanError(f"{where}: field 'provenance' must be an object")
        plan = cls(layers=layers, provenance=provenance)
        try:
            plan.validate()
        except PlanError as err:
            raise PlanError(f"{where}: {err}") from None
        for layer in plan.layers:
            layer.kind = LayerKind(layer.kind)
        return plan


def plan_file_format(path: str | os.PathLike) -> str | None:
    """The ``format`` field of a plan file's metadata (``lut_tvm.plan`` or ``lut_tvm.exact_plan``),
    or None when it cannot be read: the loader then names what is wrong with the file."""
    try:
        with np.load(Path(path), allow_pickle=False) as npz:
            meta = json.loads(npz[META_KEY].tobytes().decode())
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile,
            UnicodeDecodeError):
        return None
    return meta.get("format") if isinstance(meta, dict) else None


@dataclass
class Plan(PlanKind):
    """All planned layers of one model, plus free-form provenance (how it was built)."""

    FORMAT = PLAN_FORMAT
    LABEL = "plan"
    KERNELS = "LUT kernels"

    layers: list[LayerPlan]
    provenance: dict = field(default_factory=dict)

    @property
    def has_tables(self) -> bool:
        """Whether a layer carries free tables (the plan is then saved as version 2)."""
        return any(layer.tables is not None for layer in self.layers)

    @property
    def version(self) -> int:
        """The format version ``save`` writes: the lowest that carries every layer's fields."""
        if any(layer.act_bits != DEFAULT_ACT_BITS for layer in self.layers):
            return PLAN_VERSION_ACT_BITS
        if any(EncodeMode(layer.encode) is not EncodeMode.FLOAT for layer in self.layers):
            return PLAN_VERSION_ENCODE
        if any(LayerMode(layer.mode) is not LayerMode.LUT for layer in self.layers):
            return PLAN_VERSION_MODES
        if any(int(layer.groups) != 1 for layer in self.layers):
            return PLAN_VERSION_GROUPS
        if any(TableQuant(layer.table_quant) is not TableQuant.INT8_PER_LAYER for layer in self.layers):
            return PLAN_VERSION_TABLE_QUANT
        return PLAN_VERSION_TABLES if self.has_tables else PLAN_VERSION

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan atomically to ``path`` (an ``.npz``) as version ``self.version``."""
        self.validate()
        path = Path(path)
        version = self.version
        with_tables = version >= PLAN_VERSION_TABLES
        meta = {
            "format": PLAN_FORMAT,
            "version": version,
            "provenance": self.provenance,
            "layers": [_layer_entry(layer, version, with_tables) for layer in self.layers],
        }
        arrays = {f"layer{i}.centroids": layer.centroids for i, layer in enumerate(self.layers)
                  if layer.centroids is not None}
        arrays.update({f"layer{i}.tables": layer.tables for i, layer in enumerate(self.layers)
                       if layer.tables is not None})
        return write_npz_with_meta(path, arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Plan":
        """Read and validate a plan file; raise PlanError naming the file, layer and field."""
        path = Path(path)
        where = f"plan file {str(path)!r}"
        arrays, meta = read_npz_with_meta(path, where, PLAN_FORMAT, SUPPORTED_VERSIONS)
        version = meta["version"]
        layers = []
        for index, entry in enumerate(checked_layer_entries(where, meta)):
            name = entry["name"]
            key = f"layer{index}.centroids"
            mode = load_choice(where, name, entry, version, "mode", LayerMode.LUT, PLAN_VERSION_MODES)
            if mode is LayerMode.INT8_DENSE:
                layers.append(_load_int8_layer(where, index, entry, arrays, version))
                continue
            if key not in arrays:
                raise PlanError(f"{where}, layer {name!r}: missing array {key!r}")
            check_layer_shape_fields(f"{where}, layer {name!r}", entry, arrays[key])
            tables = load_tables(where, name, index, entry, arrays, version)
            table_quant = entry.get("table_quant", TableQuant.INT8_PER_LAYER.value)
            if version < PLAN_VERSION_TABLE_QUANT and table_quant in _NEWER_TABLE_QUANTS:
                raise PlanError(f"{where}, layer {name!r}: field 'table_quant' {table_quant!r} needs plan "
                                f"version {PLAN_VERSION_TABLE_QUANT}, but the file is version {version}")
            groups = load_groups(where, name, entry, version)
            layers.append(LayerPlan(
                name=name,
                kind=entry["kind"],
                weight_shape=tuple(int(d) for d in entry["weight_shape"]),
                weight_fingerprint=str(entry["weight_fingerprint"]),
                centroids=arrays[key],
                table_quant=table_quant,
                tables=tables,
                groups=groups,
                encode=load_choice(where, name, entry, version, "encode", EncodeMode.FLOAT, PLAN_VERSION_ENCODE),
            ))
        plan = cls.from_file_layers(where, layers, meta)
        for layer in plan.layers:
            layer.table_quant = TableQuant(layer.table_quant)
            layer.mode = LayerMode(layer.mode)
            layer.encode = EncodeMode(layer.encode)
        return plan


def _layer_entry(layer: LayerPlan, version: int, with_tables: bool) -> dict:
    """A layer's metadata entry in a file of ``version``."""
    entry = {
        "name": layer.name,
        "kind": LayerKind(layer.kind).value,
        "weight_shape": list(layer.weight_shape),
        "weight_fingerprint": layer.weight_fingerprint,
        **({"mode": LayerMode(layer.mode).value} if version >= PLAN_VERSION_MODES else {}),
    }
    if layer.is_int8:
        return {**entry, **({"act_bits": int(layer.act_bits)} if version >= PLAN_VERSION_ACT_BITS else {})}
    return {
        **entry,
        "table_quant": TableQuant(layer.table_quant).value,
        "num_centroids": layer.num_centroids,
        "sub_vector_len": layer.sub_vector_len,
        **({"tables": layer.tables is not None} if with_tables else {}),
        **({"groups": int(layer.groups)} if version >= PLAN_VERSION_GROUPS else {}),
        **({"encode": EncodeMode(layer.encode).value} if version >= PLAN_VERSION_ENCODE else {}),
    }


def _load_int8_layer(where: str, index: int, entry: dict, arrays: dict, version: int) -> LayerPlan:
    """An int8 dense layer's entry: no centroid or table array, none of the LUT fields."""
    name = entry["name"]
    stray = [key for key in (f"layer{index}.centroids", f"layer{index}.tables", "num_centroids", "sub_vector_len",
                             "tables", "groups", "table_quant", "encode") if key in arrays or key in entry]
    if stray:
        raise PlanError(f"{where}, layer {name!r}: mode int8_dense has no {stray[0]!r}")
    return LayerPlan(name, entry["kind"], tuple(int(d) for d in entry["weight_shape"]),
                     str(entry["weight_fingerprint"]), None, mode=LayerMode.INT8_DENSE,
                     act_bits=load_act_bits(where, name, entry, version))


_NEWER_TABLE_QUANTS = [q.value for q in TableQuant if q is not TableQuant.INT8_PER_LAYER]
