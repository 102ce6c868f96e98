"""The LUT-able layers of a model, their candidate choices (``LutOption``: V and K, or ``Int8Option``
for a dense layer run as an int8 matmul) and their k-means centroids (cached)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from schedules.intrin.int8_dot import preferred_act_bits
from schedules.intrin.lut_vbmi import shuffle_centroids

from ..compiler import layer_sites
from ..errors import LutTvmError
from ..kmeans import kmeans_centroids
from ..plan import LayerPlan, Plan, TableQuant
from ..planner import collect_layer_rows, layer_name, refit_layer_tables
from ..policy import TableRefit
from ..targets import resolve_target
from ..weights import LayerKind, reduction_length
from .cache import MeasurementCache, digest

LOG = logging.getLogger("lut_tvm")

DEFAULT_SUB_LENS = (2, 4, 8, 9, 16, 32)
# K = 16 everywhere (one 16-byte table column per shuffle lane); K = 32 / 64 where the target has
# AVX-512 VBMI, whose vpermb looks up a 64-byte column (``schedules.intrin.lut_vbmi``). Without
# VBMI they would run on the gather kernels only, so they are not offered there.
NUM_CENTROIDS = 16
VBMI_CENTROIDS = (32, 64)


def offered_centroids(target) -> tuple[int, ...]:
    """The K the optimizer offers on ``target``: 16, and 32 / 64 when its lookup runs ``vpermb``."""
    runs = shuffle_centroids(target) if target is not None else ()
    return (NUM_CENTROIDS, *(k for k in VBMI_CENTROIDS if k in runs))


class LutOption(int):
    """One LUT choice of a layer: V (the int value: code that reads a V sees it) and K
    (``num_centroids``). Options are equal (and hash alike) only with the same V and K; a K = 16
    option equals its plain V, so a choice written ``{layer: V}`` means K = 16 and reports and
    caches of K = 16 plans read as before. Ordered by (V, K). Printed as ``V`` at K = 16, else
    ``V K=32``."""

    num_centroids: int

    def __new__(cls, sub_len: int, num_centroids: int = NUM_CENTROIDS):
        option = super().__new__(cls, sub_len)
        option.num_centroids = int(num_centroids)
        return option

    @property
    def sub_len(self) -> int:
        return int(self)

    def __getnewargs__(self):  # pickling and copying keep K
        return int(self), self.num_centroids

    def __eq__(self, other):
        if isinstance(other, int):
            return _option_key(self) == _option_key(other)
        return NotImplemented

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self):
        return hash(int(self)) if self.num_centroids == NUM_CENTROIDS else hash(_option_key(self))

    def __lt__(self, other):
        return _option_key(self) < _option_key(other) if isinstance(other, int) else NotImplemented

    def __le__(self, other):
        return _option_key(self) <= _option_key(other) if isinstance(other, int) else NotImplemented

    def __gt__(self, other):
        return _option_key(self) > _option_key(other) if isinstance(other, int) else NotImplemented

    def __ge__(self, other):
        return _option_key(self) >= _option_key(other) if isinstance(other, int) else NotImplemented

    def __str__(self) -> str:
        if self.num_centroids == NUM_CENTROIDS:
            return str(int(self))
        return f"{int(self)} K={self.num_centroids}"

    __repr__ = __str__


class Int8Option(LutOption):
    """The choice of running a dense layer as an int8 matmul (``plan.LayerMode.INT8_DENSE``) instead
    of a LUT: no codebooks (V = 0, K = 0), activations of ``act_bits`` (8 or 7). Printed ``int8``
    at either width (the name reports and caches give the choice; the plan carries the width),
    labelled ``int8 7-bit`` by ``option_label``."""

    act_bits: int

    def __new__(cls, act_bits: int = 8):
        option = super().__new__(cls, 0, 0)
        option.act_bits = int(act_bits)
        return option

    def __getnewargs__(self):
        return (self.act_bits,)

    def __str__(self) -> str:
        return "int8"

    def __repr__(self) -> str:
        return "int8" if self.act_bits == 8 else f"int8-{self.act_bits}bit"


INT8_DENSE = Int8Option()
INT8_DENSE_7BIT = Int8Option(7)


def offered_int8(target=None) -> Int8Option:
    """The int8 choice the optimizer offers on ``target`` (None: this machine's ``native``): 7-bit
    activations where they run a faster exact kernel (no VNNI: ``vpmaddubsw``), else 8-bit
    (``schedules.intrin.int8_dot.preferred_act_bits``)."""
    return Int8Option(preferred_act_bits(resolve_target("native" if target is None else target)))


def is_int8(option) -> bool:
    """Whether ``option`` is the int8 dense choice."""
    return isinstance(option, Int8Option)


def option_label(option) -> str:
    """``int8`` or ``V=4`` / ``V=4 K=32``: an option as the report and progress lines name it."""
    if is_int8(option):
        return "int8" if option.act_bits == 8 else f"int8 {option.act_bits}-bit"
    return f"V={option}"


def _option_key(value: int) -> tuple[int, int, int]:
    """``(V, K, activation bits)`` of an option or of a plain V (K = 16; bits 0 but for int8)."""
    return int(value), getattr(value, "num_centroids", NUM_CENTROIDS), getattr(value, "act_bits", 0)


def num_centroids_of(option: int) -> int:
    """K of an option (a plain V: 16)."""
    return _option_key(option)[1]


@dataclass
class Layer:
    """One LUT-able layer of the imported model: its plan name, site and the options it may take
    (``sub_lens``: ``LutOption`` values, V with K; the name predates K)."""

    name: str
    site: object  # relay_passes.layer_sites.LayerSite
    sub_lens: tuple[int, ...]

    @property
    def kind(self) -> LayerKind:
        return self.site.kind

    @property
    def depth(self) -> int:
        return reduction_length(self.site.kind, self.site.weight.shape)

    def describe(self) -> str:
        shape = "x".join(str(d) for d in self.site.weight.shape)
        return f"{self.kind.value} {shape}"


def valid_sub_lens(depth: int, sub_lens) -> tuple[int, ...]:
    """The V of ``sub_lens`` that split a reduction length ``depth`` into whole codebooks."""
    return tuple(v for v in sorted(set(int(v) for v in sub_lens)) if v <= depth and depth % v == 0)


def model_layers(imported, sub_lens=DEFAULT_SUB_LENS, only=None,
                 centroids=(NUM_CENTROIDS,), int8: bool | Int8Option = False) -> list[Layer]:
    """Every LUT-able layer (one per distinct weight, graph order) with at least one valid V, its
    options every valid V with every K of ``centroids`` (``offered_centroids(target)``), and for a
    dense layer the int8 choice ``int8`` (``offered_int8(target)``; True: this machine's);
    ``only``: just these layer names."""
    int8 = offered_int8() if int8 is True else int8
    layers = []
    for index, site in enumerate(layer_sites(imported)):
        name = layer_name(imported, site, index)
        if only is not None and name not in only:
            continue
        valid = valid_sub_lens(reduction_length(site.kind, site.weight.shape), sub_lens)
        options = tuple(LutOption(v, k) for v in valid for k in sorted(set(centroids)))
        if is_int8(int8) and site.kind is LayerKind.DENSE:  # (an Int8Option is falsy: its V is 0)
            options += (int8,)
        if options:
            layers.append(Layer(name, site, options))
        else:
            LOG.info("optimize: layer %s stays dense (no V of %s divides D)", name, list(sub_lens))
    return layers


class CentroidBank:
    """k-means centroids per (layer, V), fit once on the layer's calibration rows and cached on disk."""

    def __init__(self, imported, layers: list[Layer], calibration: np.ndarray, cache_dir=None,
                 max_rows: int = 4096, seed: int = 0):
        self.imported, self.layers, self.calibration = imported, layers, calibration
        self.max_rows, self.seed = max_rows, seed
        self.cache = MeasurementCache(cache_dir, "centroids")
        # "rows v2": before it, a layer whose input torch.export flattens to [B * S, D] gave k-means only the
        # first B of its B * S rows per batch; centroids and metrics cached then must not be reused
        self.data_key = digest(calibration, max_rows, seed, NUM_CENTROIDS, "rows v2")
        self._rows: dict[str, np.ndarray] | None = None
        self._centroids: dict[tuple[str, int], np.ndarray] = {}
        # (layer, V) -> table scale granularity; the search sets it per candidate (default per layer)
        self.table_quant: dict[tuple[str, int], TableQuant] = {}
        # (layer, V) whose tables are refit (ridge, on the layer's own calibration rows); the search sets it
        self.refit: set[tuple[str, int]] = set()
        self._tables: dict[tuple[str, int], np.ndarray] = {}

    def _layer_rows(self, name: str) -> np.ndarray:
        if self._rows is None:  # one calibration pass for every layer, only when something is missing
            rng = np.random.default_rng(self.seed)
            rows = collect_layer_rows(self.imported, self.calibration, [l.site for l in self.layers],
                                      self.max_rows, rng)
            self._rows = {layer.name: r for layer, r in zip(self.layers, rows)}
        return self._rows[name]

    def centroids(self, layer: Layer, sub_len: int) -> np.ndarray:
        """``[C, K, V]`` float32 centroids of ``layer`` at option ``sub_len`` (V, and K: a plain V
        means K = 16)."""
        memo = (layer.name, sub_len)
        if memo not in self._centroids:
            num_centroids = num_centroids_of(sub_len)
            extra_k = "" if num_centroids == NUM_CENTROIDS else f"|K={num_centroids}"
            key = f"{layer.site.fingerprint}|V={int(sub_len)}{extra_k}|{self.data_key}"
            stored = self.cache.get(key)
            if stored is None:
                rows = self._layer_rows(layer.name)
                if len(rows) < num_centroids:
                    raise LutTvmError(f"optimize: layer {layer.name} has {len(rows)} calibration rows, "
                                      f"fewer than K = {num_centroids} centroids; give more calibration data")
                centroids = kmeans_centroids(rows, int(sub_len), num_centroids, self.seed)
                self.cache.put(key, centroids.tolist())
            else:
                centroids = np.asarray(stored, dtype=np.float32)
            self._centroids[memo] = centroids.astype(np.float32)
        return self._centroids[memo]

    def refit_tables(self, layer: Layer, sub_len: int, ridge_lambda: float = 1.0) -> np.ndarray:
        """``[C, K, N]`` tables of ``layer`` at option ``sub_len`` refit by ridge regression to the
        layer's exact outputs on its calibration rows (``planner.refit_layer_tables``): the layer
        alone as a LUT, so its inputs are the original model's."""
        memo = (layer.name, sub_len)
        if memo not in self._tables:
            self._tables[memo] = refit_layer_tables(layer.name, layer.site, self.centroids(layer, sub_len),
                                                    self._layer_rows(layer.name), TableRefit.RIDGE, ridge_lambda)
        return self._tables[memo]

    def layer_plan(self, layer: Layer, sub_len: int) -> LayerPlan:
        site = layer.site
        if is_int8(sub_len):
            return LayerPlan.int8_dense(layer.name, tuple(site.weight.shape), site.fingerprint, sub_len.act_bits)
        quant = self.table_quant.get((layer.name, sub_len), TableQuant.INT8_PER_LAYER)
        tables = self.refit_tables(layer, sub_len) if (layer.name, sub_len) in self.refit else None
        return LayerPlan(layer.name, site.kind, tuple(site.weight.shape), site.fingerprint,
                         self.centroids(layer, sub_len), table_quant=quant, tables=tables, groups=site.groups)

    def plan(self, choice: dict[str, int], provenance: dict | None = None) -> Plan:
        """The plan of ``choice`` (layer name -> option, or plain V for K = 16; the layers not
        named stay dense)."""
        by_name = {layer.name: layer for layer in self.layers}
        return Plan([self.layer_plan(by_name[n], v) for n, v in choice.items()], provenance=provenance or {})
