"""The LUT-able layers of a model, their candidate (V, K) choices and their k-means centroids (cached)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..compiler import layer_sites
from ..kmeans import kmeans_centroids
from ..plan import LayerPlan, Plan, TableQuant
from ..planner import collect_layer_rows, layer_name
from ..weights import LayerKind, reduction_length
from .cache import MeasurementCache, digest

LOG = logging.getLogger("lut_tvm")

DEFAULT_SUB_LENS = (2, 4, 8, 9, 16, 32)
# The LUT kernels hold one 16-entry table column per register lane: K = 16 only. K = 32/64
# (AVX-512 VBMI vpermb / vpermi2b) would need other kernels, so they are not offered.
NUM_CENTROIDS = 16


@dataclass
class Layer:
    """One LUT-able layer of the imported model: its plan name, site and the V it may take."""

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


def model_layers(imported, sub_lens=DEFAULT_SUB_LENS, only=None) -> list[Layer]:
    """Every LUT-able layer (one per distinct weight, graph order) with at least one valid V;
    ``only``: just these layer names."""
    layers = []
    for index, site in enumerate(layer_sites(imported)):
        name = layer_name(imported, site, index)
        if only is not None and name not in only:
            continue
        valid = valid_sub_lens(reduction_length(site.kind, site.weight.shape), sub_lens)
        if valid:
            layers.append(Layer(name, site, valid))
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
        self.data_key = digest(calibration, max_rows, seed, NUM_CENTROIDS)
        self._rows: dict[str, np.ndarray] | None = None
        self._centroids: dict[tuple[str, int], np.ndarray] = {}
        # (layer, V) -> table scale granularity; the search sets it per candidate (default per layer)
        self.table_quant: dict[tuple[str, int], TableQuant] = {}

    def _layer_rows(self, name: str) -> np.ndarray:
        if self._rows is None:  # one calibration pass for every layer, only when something is missing
            rng = np.random.default_rng(self.seed)
            rows = collect_layer_rows(self.imported, self.calibration, [l.site for l in self.layers],
                                      self.max_rows, rng)
            self._rows = {layer.name: r for layer, r in zip(self.layers, rows)}
        return self._rows[name]

    def centroids(self, layer: Layer, sub_len: int) -> np.ndarray:
        """``[C, K, V]`` float32 centroids of ``layer`` at V = ``sub_len``."""
        memo = (layer.name, sub_len)
        if memo not in self._centroids:
            key = f"{layer.site.fingerprint}|V={sub_len}|{self.data_key}"
            stored = self.cache.get(key)
            if stored is None:
                rows = self._layer_rows(layer.name)
                centroids = kmeans_centroids(rows, sub_len, NUM_CENTROIDS, self.seed)
                self.cache.put(key, centroids.tolist())
            else:
                centroids = np.asarray(stored, dtype=np.float32)
            self._centroids[memo] = centroids.astype(np.float32)
        return self._centroids[memo]

    def layer_plan(self, layer: Layer, sub_len: int) -> LayerPlan:
        site = layer.site
        quant = self.table_quant.get((layer.name, sub_len), TableQuant.INT8_PER_LAYER)
        return LayerPlan(layer.name, site.kind, tuple(site.weight.shape), site.fingerprint,
                         self.centroids(layer, sub_len), table_quant=quant)

    def plan(self, choice: dict[str, int], provenance: dict | None = None) -> Plan:
        """The plan of ``choice`` (layer name -> V; the layers not named stay dense)."""
        by_name = {layer.name: layer for layer in self.layers}
        return Plan([self.layer_plan(by_name[n], v) for n, v in choice.items()], provenance=provenance or {})
