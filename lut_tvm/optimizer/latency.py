"""Latency from the real kernels: each layer compiled alone, dense and per candidate (LUT, int8), timed on the
target (TVM's time evaluator, median), cached on disk by target + shape + candidate.

The cost model of a plan is ``whole dense model + sum over LUT layers (lut_ms - dense_ms)``:
what a layer saves is measured on its own compiled kernel, and everything the plan does not
touch is inside the measured dense model.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .. import _tvm_compat
from ..compiler import compile_imported
from ..frontends import import_model
from ..plan import LayerPlan, Plan
from ..weights import LayerKind, as_dense_matrix
from .cache import MeasurementCache
from .layers import is_int8


def single_layer_module(site):
    """A torch module of just this layer (its weight, a zero bias, its geometry) and its input."""
    import torch  # pylint: disable=import-outside-toplevel
    from torch import nn  # pylint: disable=import-outside-toplevel

    if site.kind is LayerKind.DENSE:
        matrix = as_dense_matrix(site.kind, site.weight)
        layer = nn.Linear(*matrix.shape)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(matrix.T)))
            layer.bias.zero_()
        module = layer
    else:
        geometry = site.geometry
        out_ch, in_ch = site.weight.shape[:2]
        top, left, bottom, right = geometry.padding
        symmetric = (top, left) == (bottom, right)
        layer = nn.Conv2d(in_ch * site.groups, out_ch, geometry.kernel, geometry.strides,
                          (top, left) if symmetric else 0, geometry.dilation, groups=site.groups)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(site.weight))
            layer.bias.zero_()
        module = layer if symmetric else nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), layer)
    rng = np.random.default_rng(0)
    return module.eval(), rng.random(site.input_shape, dtype=np.float32)


class KernelTimer:
    """Median milliseconds of one layer's compiled kernel, dense or LUT at (V, K), cached."""

    def __init__(self, target, cache_dir=None, number: int = 20, repeat: int = 5, threads: int | None = None):
        self.target, self.number, self.repeat = target, number, repeat
        self.cache = MeasurementCache(cache_dir, "latency")
        self.host = f"{target}|threads={threads}|tvm={_tvm_compat.TVM_VERSION}"
        self._imported: dict[str, tuple] = {}  # per layer: its single-layer model, imported once

    def key(self, site, candidate: str) -> str:
        geometry = "" if site.geometry is None else repr(site.geometry)
        return (f"{self.host}|{site.kind.value}|w={list(site.weight.shape)}|x={list(site.input_shape)}"
                f"|{geometry}|{candidate}")

    def time_ms(self, site, centroids: np.ndarray | None, int8: bool = False, act_bits: int = 8) -> float:
        """``centroids`` None: the dense kernel (``int8``: the int8 dense kernels, activations of
        ``act_bits``); else the LUT kernel with these centroids' (C, K, V)."""
        if centroids is None:
            candidate = ("int8" if act_bits == 8 else f"int8:a{act_bits}") if int8 else "dense"
        else:
            candidate = f"lut:V={centroids.shape[2]}:K={centroids.shape[1]}"
        key = self.key(site, candidate)
        cached = self.cache.get(key)
        if cached is not None:
            return float(cached)
        alone = (site.fingerprint, site.input_shape)
        if alone not in self._imported:
            module, x = single_layer_module(site)
            self._imported[alone] = (import_model(module, (x,)), x)
        imported, x = self._imported[alone]
        plan = None  # the module holds the layer's canonical weight: same fingerprint
        if centroids is not None:
            plan = Plan([LayerPlan("layer", site.kind, tuple(site.weight.shape), site.fingerprint, centroids,
                                   groups=site.groups)])
        elif int8:
            plan = Plan([LayerPlan.int8_dense("layer", tuple(site.weight.shape), site.fingerprint, act_bits)])
        compiled = compile_imported(imported, plan, self.target)
        compiled(x)  # warm up: the first run starts the thread pool and faults the tables in
        value = compiled.benchmark(x, number=self.number, repeat=self.repeat) * 1e3
        self.cache.put(key, value)
        return value


class CostModel:
    """Per-layer dense and LUT kernel times and the whole dense model's time -> a plan's latency."""

    def __init__(self, timer: KernelTimer, layers, bank, dense_model_ms: float):
        self.dense_model_ms = dense_model_ms
        self.dense_ms: dict[str, float] = {}
        self.lut_ms: dict[tuple[str, int], float] = {}
        todo = [(layer, None) for layer in layers] + [(layer, v) for layer in layers for v in layer.sub_lens]
        for layer, sub_len in tqdm(todo, desc="kernel timing", unit="kernel", leave=False, disable=None):
            if sub_len is None:
                self.dense_ms[layer.name] = timer.time_ms(layer.site, None)
            elif is_int8(sub_len):
                self.lut_ms[(layer.name, sub_len)] = timer.time_ms(layer.site, None, int8=True,
                                                                   act_bits=sub_len.act_bits)
            else:
                self.lut_ms[(layer.name, sub_len)] = timer.time_ms(layer.site, bank.centroids(layer, sub_len))

    def saving_ms(self, name: str, sub_len: int) -> float:
        return self.dense_ms[name] - self.lut_ms[(name, sub_len)]

    def predict_ms(self, choice: dict[str, int]) -> float:
        """Predicted whole-model milliseconds of ``choice`` (layer name -> V): the dense model less the
        layers' savings, scaled down by ``dense_model_ms / sum of the dense layers' kernel times`` where
        that sum is larger (kernels and model timed at other moments of a loaded machine: unscaled, a plan
        could be predicted to take less than no time). Ordering plans by it is the same either way."""
        layers_ms = sum(self.dense_ms.values())
        scale = min(1.0, self.dense_model_ms / layers_ms) if layers_ms > 0 else 1.0
        return self.dense_model_ms - scale * sum(self.saving_ms(n, v) for n, v in choice.items())
