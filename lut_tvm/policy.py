"""PlanPolicy: which layers become LUTs and with which K and V; shared by planner and training."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import ClassVar

from .errors import PlanError
from .plan import EncodeMode, TableQuant
from .ridge import check_ridge_lambda
from .weights import LayerKind, reduction_length


class TableRefit(str, Enum):
    """How the tables of a k-means LUT are refit after clustering (``lut_tvm.ridge``).

    ``none``: ``T = P . W``. ``ridge``: MADDNESS's free tables ``T [C, K, N]`` by ridge regression
    of the layer's outputs on the one-hot codes. ``ridge_weight``: the same fit with ``T = P . W'``
    (a refit weight ``W'``). A plan stores either as free tables (``LayerPlan.tables``).
    """

    NONE = "none"
    RIDGE = "ridge"
    RIDGE_WEIGHT = "ridge_weight"


@dataclass
class PlanPolicy:
    """Which layers become LUTs, with which K and V (LUT-NN's defaults) and table scale granularity
    (``table_quant``: one INT8 scale per layer, the default, or one per output column) and encode
    (``encode``: float, the default, or int8 distances for the dense layers; convs keep float)."""

    VERSION: ClassVar[int] = 1

    num_centroids: int = 16
    dense_sub_len: int = 16
    conv_sub_len: int | None = None  # None: kh*kw (9 for a 3x3 conv: one channel's window)
    conv1x1_sub_len: int = 4
    skip_first_conv: bool = True
    skip_last_dense: bool = True
    sub_len_overrides: dict[str, int] = field(default_factory=dict)
    only: list[str] | None = None
    exclude: list[str] = field(default_factory=list)
    max_rows: int = 4096
    seed: int = 0
    refit_tables: TableRefit = TableRefit.NONE
    ridge_lambda: float = 1.0
    table_quant: TableQuant = TableQuant.INT8_PER_LAYER
    encode: EncodeMode = EncodeMode.FLOAT

    def __post_init__(self):
        try:
            self.encode = EncodeMode(self.encode)
        except ValueError:
            raise PlanError(f"policy: encode = {self.encode!r}, not one of {[e.value for e in EncodeMode]}") from None
        try:
            self.table_quant = TableQuant(self.table_quant)
        except ValueError:
            raise PlanError(f"policy: table_quant = {self.table_quant!r}, not one of "
                            f"{[q.value for q in TableQuant]}") from None
        try:
            self.refit_tables = TableRefit(self.refit_tables)
        except ValueError:
            raise PlanError(f"policy: refit_tables = {self.refit_tables!r}, not one of "
                            f"{[r.value for r in TableRefit]}") from None
        self.ridge_lambda = check_ridge_lambda(self.ridge_lambda, "policy: ridge_lambda")
        if not 2 <= self.num_centroids <= 256:
            raise PlanError(f"policy: num_centroids = {self.num_centroids}, must be in [2, 256]")
        for name, value in [("dense_sub_len", self.dense_sub_len),
                            ("conv1x1_sub_len", self.conv1x1_sub_len),
                            ("conv_sub_len", self.conv_sub_len or 1),
                            *self.sub_len_overrides.items()]:
            if int(value) < 1:
                raise PlanError(f"policy: sub-vector length {name} = {value} must be >= 1")
        if self.max_rows < self.num_centroids:
            raise PlanError(f"policy: max_rows = {self.max_rows} is below K = {self.num_centroids}")

    def to_dict(self) -> dict:
        return {"version": self.VERSION, **asdict(self), "refit_tables": self.refit_tables.value,
                "table_quant": self.table_quant.value, "encode": self.encode.value}

    @classmethod
    def from_dict(cls, data: dict) -> "PlanPolicy":
        data = dict(data)
        version = data.pop("version", cls.VERSION)
        if version != cls.VERSION:
            raise PlanError(f"policy version {version} is not supported (expected {cls.VERSION})")
        return cls(**data)

    def sub_len(self, name: str, kind: LayerKind, weight_shape) -> int:
        """V for one layer."""
        if name in self.sub_len_overrides:
            return int(self.sub_len_overrides[name])
        if kind is LayerKind.DENSE:
            return self.dense_sub_len
        kernel_area = int(weight_shape[2]) * int(weight_shape[3])
        if kernel_area == 1:
            return self.conv1x1_sub_len
        return self.conv_sub_len or kernel_area

    def checked_sub_len(self, name: str, kind: LayerKind, weight_shape) -> int:
        """``sub_len``, with PlanError unless it divides the layer's reduction length D."""
        sub_len = self.sub_len(name, kind, weight_shape)
        depth = reduction_length(kind, weight_shape)
        if depth % sub_len:
            raise PlanError(f"layer {name!r}: reduction length D = {depth} is not a multiple of "
                            f"V = {sub_len}; set a V that divides it (--sub-len {name}=V, or "
                            f"sub_len_overrides in Python) or leave the layer out (--exclude {name})")
        return sub_len

    def choose(self, layers, other_names=()) -> list[str]:
        """The names of the layers this policy makes LUTs, from ``[(name, kind)]`` of every eligible
        layer in the model's order (the planner's graph order, ``lut_tvm.train``'s module order):
        ``only`` if given, else all but ``exclude`` and the first conv / last dense when
        ``skip_first_conv`` / ``skip_last_dense``. Names in ``only``, ``exclude`` or
        ``sub_len_overrides`` that are neither a layer nor in ``other_names`` raise PlanError."""
        layers = [(name, LayerKind(kind)) for name, kind in layers]
        names = [name for name, _ in layers]
        for field_name, given in [("only", self.only or []), ("exclude", self.exclude),
                                  ("sub_len_overrides", list(self.sub_len_overrides))]:
            unknown = set(given) - set(names) - set(other_names)
            if unknown:
                raise PlanError(f"policy field {field_name!r} names layer(s) {sorted(unknown)} that "
                                f"the model does not have; its layers are {names}")
        if self.only is not None:
            return [name for name in names if name in self.only]
        convs = [name for name, kind in layers if kind is LayerKind.CONV2D]
        denses = [name for name, kind in layers if kind is LayerKind.DENSE]
        skipped = set(self.exclude)
        if self.skip_first_conv and convs:
            skipped.add(convs[0])
        if self.skip_last_dense and denses:
            skipped.add(denses[-1])
        return [name for name in names if name not in skipped]
