"""Turn a torch model into a LUT model: choose layers, k-means centroids on their real inputs.

``convert`` deep-copies the model and replaces the Linear / Conv2d layers that the config's
``PlanPolicy`` chooses (by default all but the first conv and the last Linear, in registration
order; grouped and depthwise convs included) by ``LutLinear`` / ``LutConv2d``. Each layer's centroids are k-means
(``planner.kmeans_centroids``) of its own input rows, recorded by forward hooks on the original
model over the calibration data. Layer names are module paths (``features.3``). When the policy
asks (``refit_tables``), the tables are then refit by ridge regression (``refit.ridge_refit``).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import LutTvmError, PlanError
from ..kmeans import kmeans_centroids
from ..policy import PlanPolicy, TableRefit
from ..reference import encode_margin
from ..torch_layers import lut_modules, module_weight
from ..weights import LayerKind, default_sub_len_fits
from .batches import iter_batches
from .layers import LutConv2d, LutLinear, conv1d_rows, conv_padding, conv_rows, replace_module
from .refit import ridge_refit

LOG = logging.getLogger("lut_tvm")


@dataclass
class LutConfig:
    """How ``convert`` builds a LUT model: the layer policy (K, V, which layers) and calibration."""

    VERSION: ClassVar[int] = 1

    policy: PlanPolicy = field(default_factory=PlanPolicy)
    temperature: float | None = None  # initial t per layer; None: median nearest-two distance gap
    calibration_samples: int = 1024
    batch_size: int = 64

    def __post_init__(self):
        if isinstance(self.policy, dict):
            self.policy = PlanPolicy.from_dict(self.policy)
        if not isinstance(self.policy, PlanPolicy):
            raise LutTvmError(f"LutConfig: field 'policy' must be a PlanPolicy or its dict, "
                              f"got {type(self.policy).__name__}")
        if self.temperature is not None and not (0 < float(self.temperature) < float("inf")):
            raise LutTvmError(f"LutConfig: field 'temperature' = {self.temperature} must be a "
                              "positive finite number (or None)")
        for name in ("calibration_samples", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise LutTvmError(f"LutConfig: field {name!r} = {getattr(self, name)} must be >= 1")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["policy"] = self.policy.to_dict()
        return {"version": self.VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict) -> "LutConfig":
        data = dict(data)
        version = data.pop("version", cls.VERSION)
        if version != cls.VERSION:
            raise LutTvmError(f"LutConfig version {version} is not supported (expected {cls.VERSION})")
        unknown = set(data) - {"policy", "temperature", "calibration_samples", "batch_size"}
        if unknown:
            raise LutTvmError(f"LutConfig: unknown field(s) {sorted(unknown)}")
        return cls(**data)


def select_modules(model: nn.Module, policy: PlanPolicy) -> list[tuple[str, nn.Module, int]]:
    """``[(module path, module, V)]`` the policy makes LUTs: the eligible modules
    (``torch_layers.lut_modules``, the rule the compiler's layer discovery applies) chosen by
    ``PlanPolicy.choose`` as ``planner.select_layers`` chooses graph layers (first conv / last
    dense by registration order here)."""
    eligible = [(name, module, kind) for name, module, kind in lut_modules(model, grouped=True)
                if default_sub_len_fits(policy, name, kind, module_weight(module).shape,
                                      getattr(module, "groups", 1))]
    conv1d = [name for name, module in model.named_modules() if isinstance(module, nn.Conv1d)]
    chosen_names = set(policy.choose([(name, kind) for name, _, kind in eligible], other_names=conv1d))
    chosen = []
    for name, module, kind in eligible:
        if name not in chosen_names:
            continue
        sub_len = policy.checked_sub_len(name, kind, module_weight(module).shape)
        if kind is LayerKind.CONV2D:
            conv_padding(module)  # refuses the paddings a LutConv2d cannot reproduce, naming why
        chosen.append((name, module, sub_len))
    return chosen


def input_rows(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The rows ``[M, D]`` a Linear / Conv2d / Conv1d multiplies its input by its weight in."""
    if isinstance(module, nn.Conv2d):
        return conv_rows(inputs, module.kernel_size, module.stride, conv_padding(module), module.dilation)[0]
    if isinstance(module, nn.Conv1d):
        return conv1d_rows(inputs, module.kernel_size[0], module.stride[0], conv_padding(module)[1],
                           module.dilation[0])[0]
    return inputs.reshape(-1, inputs.shape[-1])


def collect_rows(model: nn.Module, modules, data, config: LutConfig) -> list[np.ndarray]:
    """Each module's input rows over the calibration data (forward hooks), at most ``max_rows``."""
    policy = config.policy
    rows: list[list[np.ndarray]] = [[] for _ in modules]

    def hook(slot):
        def record(module, args, _output):
            rows[slot].append(input_rows(module, args[0].detach()).cpu().numpy().astype(np.float32))
        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            batches = iter_batches(data, config.batch_size, config.calibration_samples)
            for x in tqdm(batches, desc="calibration", unit="batch", leave=False):
                model(x.to(torch.float32))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    rng = np.random.default_rng(policy.seed)
    sampled = []
    for parts in rows:
        if not parts:
            raise PlanError("the calibration data never reached a chosen layer (no batches?)")
        stacked = np.concatenate(parts)
        if len(stacked) > policy.max_rows:
            stacked = stacked[rng.choice(len(stacked), policy.max_rows, replace=False)]
        sampled.append(stacked)
    return sampled


def layer_centroids(name: str, layer_rows, sub_len: int, config: "LutConfig"):
    """``(centroids [C, K, V], initial temperature)`` of one layer from its calibration rows."""
    num_centroids = config.policy.num_centroids
    if len(layer_rows) < num_centroids:
        raise PlanError(f"layer {name!r}: {len(layer_rows)} calibration rows for "
                        f"K = {num_centroids} centroids; give more calibration data")
    centroids = kmeans_centroids(layer_rows, sub_len, num_centroids, config.policy.seed)
    return centroids, config.temperature or initial_temperature(layer_rows, centroids)


def initial_temperature(rows: np.ndarray, centroids: np.ndarray, max_rows: int = 1024) -> float:
    """Median gap between each sub-vector's two nearest centroids (ties left out), else 1."""
    gaps = encode_margin(rows[:max_rows], centroids)
    gaps = gaps[gaps > 0]
    return float(np.median(gaps)) if gaps.size else 1.0


def apply_table_refit(lut_model: nn.Module, original: nn.Module, config: LutConfig, calibration_data) -> nn.Module:
    """The policy's table refit (``refit_tables``, ``ridge_lambda``) of a converted model, in place:
    ``refit.ridge_refit`` sequentially over the first ``calibration_samples`` samples."""
    policy = config.policy
    if policy.refit_tables is TableRefit.NONE:
        return lut_model

    return ridge_refit(lut_model, original, calibration_data, policy.refit_tables, policy.ridge_lambda,
                       samples=config.calibration_samples, batch_size=config.batch_size,
                       max_rows=2 * policy.max_rows, seed=policy.seed)


def convert(model: nn.Module, config: LutConfig | None = None, calibration_data=None) -> nn.Module:
    """A deep copy of ``model`` with the policy's layers as LUT layers, k-means-initialised, then
    the policy's table refit (none by default; see ``apply_table_refit``).

    ``calibration_data``: an array / tensor of input samples, or an iterable of batches (``x`` or
    ``(x, y)``); the first ``config.calibration_samples`` samples are used. The original model
    is not modified.
    """
    config = config or LutConfig()
    lut_model = convert_kmeans(model, config, calibration_data)
    return apply_table_refit(lut_model, model, config, calibration_data)


def convert_kmeans(model: nn.Module, config: LutConfig | None = None, calibration_data=None) -> nn.Module:
    """``convert`` without the table refit."""
    config = config or LutConfig()
    if calibration_data is None:
        raise LutTvmError("convert needs calibration_data: k-means runs on each layer's real inputs")
    chosen = select_modules(model, config.policy)
    if not chosen:
        LOG.warning("convert: the policy chose no layer; the copy has no LUT layers")
    return kmeans_lut_copy(model, model, chosen, calibration_data, config, _lut_layer)


def _lut_layer(original: nn.Module, centroids, temperature: float) -> nn.Module:
    if isinstance(original, nn.Conv2d):
        return LutConv2d.from_conv(original, centroids, temperature)
    return LutLinear.from_linear(original, centroids, temperature)


def kmeans_lut_copy(model: nn.Module, source: nn.Module, chosen, calibration_data, config: LutConfig,
                    make_layer, label: str = "") -> nn.Module:
    """A deep copy of ``model`` with each chosen ``(module path, module, V)`` replaced by
    ``make_layer(module, centroids, temperature)``, the centroids k-means of the layer's input
    rows recorded on ``source`` (same module paths; ``collect_rows``)."""
    rows = collect_rows(source, [m for _, m, _ in chosen], calibration_data, config) if chosen else []
    lut_model = copy.deepcopy(model)
    num_centroids = config.policy.num_centroids
    for (name, _, sub_len), layer_rows in tqdm(list(zip(chosen, rows)), desc=f"k-means{label}", unit="layer"):
        centroids, temperature = layer_centroids(name, layer_rows, sub_len, config)
        layer = make_layer(lut_model.get_submodule(name), centroids, temperature)
        layer.table_quant = config.policy.table_quant
        replace_module(lut_model, name, layer)
        LOG.info("LUT layer %s%s: V=%d, C=%d, K=%d, t0=%.3g", name, label, sub_len, centroids.shape[0],
                 num_centroids, temperature)
    lut_model.lut_config = config.to_dict()
    return lut_model
