"""The LUT plan file's format versions and the loaders of its per-layer fields (``lut_tvm.plan``).

Each field newer than version 1 is refused in a file of an older version, naming the file, the
layer and the version the field needs.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from .int8_reference import ACT_BITS

from .errors import PlanError
from .npz_meta import check_int_field

PLAN_VERSION = 1  # plans without free tables
PLAN_VERSION_TABLES = 2  # plans with a layer carrying free tables
PLAN_VERSION_TABLE_QUANT = 3  # plans with a layer whose table_quant is not int8_per_layer
PLAN_VERSION_GROUPS = 4  # plans with a grouped (or depthwise) conv layer
PLAN_VERSION_MODES = 5  # plans with a layer whose mode is not lut (an int8 dense layer)
PLAN_VERSION_ENCODE = 6  # plans with a layer whose encode is not float (the int8 encode)
PLAN_VERSION_ACT_BITS = 7  # plans with an int8 dense layer whose activations are not 8 bits
SUPPORTED_VERSIONS = (PLAN_VERSION, PLAN_VERSION_TABLES, PLAN_VERSION_TABLE_QUANT, PLAN_VERSION_GROUPS,
                      PLAN_VERSION_MODES, PLAN_VERSION_ENCODE, PLAN_VERSION_ACT_BITS)
DEFAULT_ACT_BITS = 8  # an int8 dense layer's activation width when the file does not say


class EncodeMode(str, Enum):
    """How a LUT layer computes its codes: float32 distances (``reference.encode``) or integer ones
    on int8-quantized inputs and centroids (``int8_encode_reference.encode_int8``)."""

    FLOAT = "float"
    INT8 = "int8"


def checked_choice(at: str, field: str, choices: type[Enum], value):
    """``value`` as a member of the enum ``choices``, or a ``PlanError`` naming ``field`` at ``at``."""
    try:
        return choices(value)
    except (ValueError, TypeError):
        raise PlanError(f"{at}: field '{field}' is {value!r}, not one of {[m.value for m in choices]}") from None


def load_choice(where: str, name: str, entry: dict, version: int, field: str, default: Enum, since: int):
    """A layer entry's enum ``field`` (``default`` when absent); another value needs plan version ``since``."""
    value = checked_choice(f"{where}, layer {name!r}", field, type(default), entry.get(field, default.value))
    if value is not default and version < since:
        raise PlanError(f"{where}, layer {name!r}: field '{field}' {value.value} needs plan version "
                        f"{since}, but the file is version {version}")
    return value


def checked_act_bits(at: str, value) -> int:
    """An int8 dense layer's ``act_bits`` (7 or 8), or a ``PlanError`` naming it at ``at``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or int(value) not in ACT_BITS:
        raise PlanError(f"{at}: field 'act_bits' is {value!r}, not one of {list(ACT_BITS)}")
    return int(value)


def load_act_bits(where: str, name: str, entry: dict, version: int) -> int:
    """An int8 dense layer's ``act_bits`` (8 when absent); another value needs plan version 7."""
    bits = checked_act_bits(f"{where}, layer {name!r}", entry.get("act_bits", DEFAULT_ACT_BITS))
    if bits != DEFAULT_ACT_BITS and version < PLAN_VERSION_ACT_BITS:
        raise PlanError(f"{where}, layer {name!r}: field 'act_bits' {bits} needs plan version "
                        f"{PLAN_VERSION_ACT_BITS}, but the file is version {version}")
    return bits


def check_layer_shape_fields(at: str, entry: dict, centroids) -> None:
    """The centroids array against the layer entry's ``num_centroids`` (K) and ``sub_vector_len``
    (V), written since they exist (older files have neither): centroids with their axes swapped
    have the same size and C*V, and would compile to nonsense without this check."""
    check_int_field(at, entry, "num_centroids")
    check_int_field(at, entry, "sub_vector_len")
    shape = getattr(centroids, "shape", ())
    if len(shape) != 3:
        raise PlanError(f"{at}: field 'centroids' must be a 3-D array [C, K, V], "
                        f"got shape {list(shape)}")
    for key, axis, letter in (("num_centroids", 1, "K"), ("sub_vector_len", 2, "V")):
        if key in entry and shape[axis] != entry[key]:
            raise PlanError(f"{at}: field 'centroids' is {list(shape)} [C, K, V], but field "
                            f"{key!r} says {letter} = {entry[key]} (axes swapped?)")


def load_groups(where: str, name: str, entry: dict, version: int) -> int:
    """A layer's ``groups`` (1 when absent); only version 4 files may carry another value."""
    groups = entry.get("groups", 1)
    if type(groups) is not int or groups < 1:
        raise PlanError(f"{where}, layer {name!r}: field 'groups' is {groups!r}, not a positive integer")
    if groups != 1 and version < PLAN_VERSION_GROUPS:
        raise PlanError(f"{where}, layer {name!r}: field 'groups' {groups} needs plan version "
                        f"{PLAN_VERSION_GROUPS}, but the file is version {version}")
    return groups


def load_tables(where: str, name: str, index: int, entry: dict, arrays: dict, version: int):
    """Layer ``index``'s free tables (or None): version 2 says per layer (field ``tables``, a bool)
    whether the array ``layer<i>.tables`` is there; version 1 has none."""
    key = f"layer{index}.tables"
    if version == PLAN_VERSION:
        if key in arrays or "tables" in entry:
            raise PlanError(f"{where}, layer {name!r}: field 'tables' needs plan version "
                            f"{PLAN_VERSION_TABLES}, but the file is version {PLAN_VERSION}")
        return None
    flag = entry.get("tables", False)
    if type(flag) is not bool:
        raise PlanError(f"{where}, layer {name!r}: field 'tables' is {flag!r}, not true or false")
    if flag and key not in arrays:
        raise PlanError(f"{where}, layer {name!r}: field 'tables' is true but array {key!r} is missing")
    if not flag and key in arrays:
        raise PlanError(f"{where}, layer {name!r}: array {key!r} is there but field 'tables' is not true")
    return arrays[key] if flag else None
