"""Post-training quantization of a model to an ExactPlan, and its exact fake-quant evaluation in torch.

``quantize_model(model, calibration, bits)`` takes a torch module, an ``.onnx`` / ``.pt2`` file or an
imported model (``frontends.ImportedModel``). Its layers are the compiler's own (``planner.named_layers``:
the dense and conv2d layers ``relay_passes.layer_sites`` finds, named as ``planner.layer_name``
names them, ``features.3``), and the input of each comes from the calibration samples run through
the model itself, compiled dense with the layer inputs tapped (``planner.tapped_batches``). Each
layer's int8 input scale is calibrated (``reference.calibrate_activation_scale``) and its weight
quantized per output channel to ``b`` bits (2..8, one ``b`` for all layers or a ``{layer: b}``
dict). A plan layer is bound by ``lut_tvm.weights.fingerprint`` of the weight in its canonical
layout (dense ``[D, N]``, conv ``[O, I, kh, kw]``), so ``lut_tvm.compile`` binds the plan to the
torch.export or ONNX import of the same model, whichever it was made from.

``QuantizedTorchModel(model, plan)`` replaces each planned layer of a torch module (found by weight
fingerprint, ``torch_layers.modules_by_fingerprint``) by what the integer reference
(``reference.QuantizedDense``, ``conv_reference.int_conv2d``) computes: ``xq = clip(rint(x/sx))``,
``acc = xq @ Wq`` (conv: im2col), ``y = float32(acc + bias_q) * out_scale``; everything else
(BatchNorm, pooling, residual adds) stays float. The integer GEMM runs in float32 when every
partial sum is below 2^24 (``127 * max_n sum_d |Wq[d, n]|``, then exact in any order) and in
float64 otherwise, so the outputs equal the NumPy reference's bit for bit. Convs use
``F.conv2d`` on the integer values (PyTorch's CPU convolution is direct or GEMM-based, never
Winograd unless asked, so every partial sum is an exact integer; the tests check it). ``Backend.REFERENCE_LUT``
computes each planned layer with the NumPy exact LUT decomposition instead (slow; the proof).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..compiler import imported_name
from ..errors import PlanError
from ..frontends import ImportedModel
from ..planner import import_for_calibration, named_layers, tapped_batches
from ..reference import conv_output_hw, im2col_nchw
from ..torch_layers import module_weight, modules_by_fingerprint
from ..weights import LayerKind
from .plan import ExactLayerPlan, ExactPlan
from .reference import (ACT_QMAX, MAX_BITS, calibrate_activation_scale, check_bits, exact_lut_matmul,
                        output_scale, pack_exact, quantize_bias)
from .reference.tmac import pack_tmac, tmac_matmul

LOG = logging.getLogger("lut_tvm")
EXACT_FLOAT32_LIMIT = 2 ** 24


@dataclass
class CalibratedLayer:
    """One layer after calibration: its int8 input scale and output positions per sample."""

    name: str
    kind: LayerKind
    weight: np.ndarray  # canonical layout
    act_scale: np.float32
    rows_per_sample: int

    def plan_entry(self, bits: int) -> ExactLayerPlan:
        return ExactLayerPlan.from_weight(self.name, self.kind, self.weight, check_bits(bits),
                                          self.act_scale)


class _InputStats:
    """Running ``max|x|`` and a seeded subsample of ``|x|`` (for percentile calibration)."""

    def __init__(self, max_values: int, rng: np.random.Generator):
        self.peak, self.values, self.max_values, self.rng = 0.0, [], max_values, rng
        self.kept = 0

    def add(self, x: np.ndarray) -> None:
        flat = np.abs(x).reshape(-1)
        self.peak = max(self.peak, float(flat.max(initial=0.0)))
        take = min(flat.size, max(0, self.max_values - self.kept))
        if take:
            self.values.append(flat[self.rng.choice(flat.size, take, replace=False)])
            self.kept += take


def rows_per_sample(site) -> int:
    """Output positions per sample of a layer site: ``OH * OW`` of a conv, the positions of a dense
    layer's input rows (1 for ``[B, D]``, ``T`` for ``[B, T, D]``)."""
    if site.kind is LayerKind.DENSE:
        return int(np.prod(site.input_shape[1:-1]))
    geometry = site.geometry
    out_h, out_w = conv_output_hw(*site.input_shape[2:], geometry.kernel, geometry.strides,
                                  geometry.padding, geometry.dilation)
    return out_h * out_w


def calibrate_layers(model, calibration, *, method: str = "max", batch_size: int = 256,
                     max_values: int = 1 << 20, seed: int = 0, names=None,
                     example_inputs=None) -> list[CalibratedLayer]:
    """Run ``calibration`` (samples on axis 0) through ``model``; one entry per layer the compiler
    can replace (``planner.named_layers``), in graph order.

    ``model``: a torch module (imported with a batch of ``batch_size`` calibration samples unless
    ``example_inputs`` are given), an ``.onnx`` / ``.pt2`` path or an ``ImportedModel``; the
    samples run in the imported model's batch. ``names`` restricts the layers (unknown names raise
    PlanError).
    """
    if len(calibration) == 0:
        raise PlanError("calibration needs at least one sample")
    calibration, imported = import_for_calibration(model, calibration, example_inputs, batch_size)
    layers = named_layers(imported)
    if names is not None:
        known = [n for n, _ in layers]
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise PlanError(f"layer(s) {unknown} are not quantizable layers of {imported.source}; "
                            f"its layers are {known}")
        layers = [(n, site) for n, site in layers if n in set(names)]
    rng = np.random.default_rng(seed)
    stats = [_InputStats(max_values, rng) for _ in layers]
    for inputs in tapped_batches(imported, calibration, [site for _, site in layers], keep_tail=True):
        for stat, layer_input in zip(stats, inputs):
            stat.add(layer_input)
    calibrated = []
    for (name, site), stat in zip(layers, stats):
        values = np.array([stat.peak], np.float32) if method == "max" else np.concatenate(stat.values)
        calibrated.append(CalibratedLayer(name, site.kind, site.weight, calibrate_activation_scale(values, method),
                                          rows_per_sample(site)))
    return calibrated


def bits_for(layers: list[CalibratedLayer], bits) -> dict[str, int]:
    """``{layer: bits}`` from one int or a dict (layers it omits get 8; unknown names raise)."""
    if isinstance(bits, dict):
        names = {layer.name for layer in layers}
        unknown = sorted(set(bits) - names)
        if unknown:
            raise PlanError(f"bits given for layer(s) {unknown} that are not quantized layers; "
                            f"the layers are {sorted(names)}")
        return {layer.name: check_bits(bits.get(layer.name, MAX_BITS)) for layer in layers}
    return {layer.name: check_bits(bits) for layer in layers}


def build_plan(layers: list[CalibratedLayer], bits, provenance: dict | None = None) -> ExactPlan:
    """An ExactPlan of calibrated layers at ``bits`` (an int or ``{layer: bits}``)."""
    chosen = bits_for(layers, bits)
    plan = ExactPlan([layer.plan_entry(chosen[layer.name]) for layer in layers], dict(provenance or {}))
    plan.validate()
    return plan


def quantize_model(model, calibration, bits=8, *, method: str = "max", batch_size: int = 256,
                   names=None, seed: int = 0, example_inputs=None) -> ExactPlan:
    """Post-training quantization: calibrated int8 inputs, per-channel ``bits``-bit weights.

    ``model``: a torch module, an ``.onnx`` / ``.pt2`` file or an ``ImportedModel`` (see
    ``calibrate_layers``); the plan compiles with ``lut_tvm.compile`` of any import of the model.
    """
    if not isinstance(bits, dict):
        check_bits(bits)  # before the import and calibration run
    layers = calibrate_layers(model, calibration, method=method, batch_size=batch_size, seed=seed,
                              names=names, example_inputs=example_inputs)
    source = model.source if isinstance(model, ImportedModel) else imported_name(model)
    return build_plan(layers, bits, {"method": "ptq", "calibration": method,
                                     "samples": int(len(calibration)), "model": source})


# ------------------------------------------------------------------ exact fake-quant evaluation

class Backend(str, Enum):
    """How a planned layer's integer product is computed."""

    FAKE_QUANT = "fake_quant"  # torch float32/float64 GEMM on integer values (exact, fast)
    REFERENCE_LUT = "reference_lut"  # NumPy bit-plane exact LUT (reference.exact_lut_matmul)


class ExactQuantLayer(nn.Module):
    """A Linear or Conv2d replaced by the integer reference's computation (see module doc)."""

    def __init__(self, module: nn.Module, layer: ExactLayerPlan, backend: Backend):
        super().__init__()
        wq = layer.quantized_weight(module_weight(module))  # [D, N] int8, fingerprint checked
        bias = None if module.bias is None else module.bias.detach().cpu().numpy()
        out_scale = output_scale(layer.act_scale, layer.w_scale)
        bound = ACT_QMAX * int(np.abs(wq.astype(np.int64)).sum(axis=0).max(initial=0))
        self.gemm_dtype = torch.float32 if bound < EXACT_FLOAT32_LIMIT else torch.float64
        self.name, self.bits, self.backend = layer.name, layer.bits, Backend(backend)
        self.is_conv = isinstance(module, nn.Conv2d)
        if self.is_conv:
            self.conv_args = (module.kernel_size, module.dilation, module.padding, module.stride)
        self.register_buffer("act_scale", torch.tensor(np.float32(layer.act_scale)))
        self.register_buffer("weight_nd", torch.from_numpy(np.ascontiguousarray(wq.T)).to(self.gemm_dtype))
        if self.is_conv:
            self.register_buffer("weight_conv", self.weight_nd.reshape(module.weight.shape))
        self.register_buffer("bias_q", torch.from_numpy(quantize_bias(bias, out_scale).astype(np.float64)))
        self.register_buffer("out_scale", torch.from_numpy(out_scale))
        # 1-bit {-1, +1} weights have no bit-plane form: the T-MAC layout (signed table) instead
        self.lut = tmac_matmul if layer.bits == 1 else exact_lut_matmul
        pack = (lambda w, _: pack_tmac(w, 1)) if layer.bits == 1 else pack_exact
        self.packed = pack(wq, layer.bits) if self.backend is Backend.REFERENCE_LUT else None

    def _dequantize(self, acc: torch.Tensor) -> torch.Tensor:
        """``float32(acc + bias_q) * out_scale`` with channels on the last axis."""
        return (acc.to(torch.float64) + self.bias_q).to(torch.float32) * self.out_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = torch.clamp(torch.round(x.to(torch.float32) / self.act_scale), -ACT_QMAX, ACT_QMAX)
        if self.backend is Backend.REFERENCE_LUT:
            return self._reference_forward(xq)
        if not self.is_conv:
            acc = xq.to(self.gemm_dtype) @ self.weight_nd.T
            return self._dequantize(acc)
        _, dilation, padding, stride = self.conv_args
        acc = F.conv2d(xq.to(self.gemm_dtype), self.weight_conv, None, stride, padding, dilation)
        return self._dequantize(acc.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()

    def _reference_forward(self, xq: torch.Tensor) -> torch.Tensor:
        ints = xq.cpu().numpy().astype(np.int8)
        if self.is_conv:
            kernel, dilation, padding, stride = self.conv_args
            rows, (batch, out_h, out_w) = im2col_nchw(ints, kernel, stride, padding, dilation)
            y = self._dequantize(torch.from_numpy(self.lut(rows, self.packed)))
            return y.reshape(batch, out_h, out_w, -1).permute(0, 3, 1, 2).contiguous()
        flat = ints.reshape(-1, ints.shape[-1])
        acc = torch.from_numpy(self.lut(flat, self.packed)).reshape(*ints.shape[:-1], -1)
        return self._dequantize(acc)


class QuantizedTorchModel(nn.Module):
    """A copy of ``model`` whose planned layers compute exactly what the integer reference does
    (each plan layer's Linear / Conv2d found by its weight fingerprint)."""

    def __init__(self, model: nn.Module, plan: ExactPlan, backend: Backend = Backend.FAKE_QUANT):
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        modules = modules_by_fingerprint(self.model)
        missing = [layer.name for layer in plan.layers if layer.weight_fingerprint not in modules]
        if missing:
            raise PlanError(f"exact plan layer(s) {missing} match no Linear/Conv2d weight of "
                            f"{type(model).__name__} that the torch evaluation reproduces (groups 1, "
                            "zero padding): the plan was made for another model")
        for layer in plan.layers:
            name, module = modules[layer.weight_fingerprint]
            replacement = ExactQuantLayer(module, layer, backend)
            parent, _, attr = name.rpartition(".")
            if not name:  # the model is itself one layer
                self.model = replacement
            else:
                setattr(self.model.get_submodule(parent) if parent else self.model, attr, replacement)

    def forward(self, *args):
        return self.model(*args)


def predict(model: nn.Module, x, batch_size: int = 256) -> np.ndarray:
    """Outputs of ``model`` (eval mode, no grad) on ``x`` in batches, as float32 NumPy."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(chunk) for chunk in
                          torch.as_tensor(np.asarray(x, dtype=np.float32)).split(batch_size)]).numpy()


def evaluate_quantized(model: nn.Module, plan: ExactPlan, data, batch_size: int = 256,
                       backend: Backend = Backend.FAKE_QUANT) -> float:
    """Top-1 accuracy on ``data = (x, y)`` of ``model`` quantized as ``plan`` says."""
    x, y = data
    logits = predict(QuantizedTorchModel(model, plan, backend), x, batch_size)
    return float((logits.argmax(-1) == np.asarray(y)).mean())
