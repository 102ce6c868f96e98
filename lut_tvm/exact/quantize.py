"""Post-training quantization of a torch model to an ExactPlan, and its exact fake-quant evaluation.

``quantize_model(model, calibration, bits)`` runs the calibration samples through the float
model with forward hooks on every ``nn.Linear`` / ``nn.Conv2d`` (groups 1, zero padding),
calibrates each layer's int8 input scale (``reference.calibrate_activation_scale``) and
quantizes its weight per output channel to ``b`` bits (2..8, one ``b`` for all layers or a
``{layer: b}`` dict). Layers are named as ``lut_tvm.planner.layer_name`` names them (the
module's name, ``features.3``) and bound by ``lut_tvm.weights.fingerprint`` of the weight in
its canonical layout (dense ``[D, N]``, conv ``[O, I, kh, kw]``), so ``lut_tvm.compile`` binds
the plan to the torch.export or ONNX import of the same model.

``QuantizedTorchModel(model, plan)`` replaces each planned layer by what the integer reference
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

from ..errors import PlanError
from ..weights import LayerKind, fingerprint
from .conv_reference import conv_rows
from .plan import ExactLayerPlan, ExactPlan
from .reference import (ACT_QMAX, MAX_BITS, calibrate_activation_scale, check_bits, exact_lut_matmul,
                        output_scale, pack_exact, quantize_bias)

LOG = logging.getLogger("lut_tvm")
EXACT_FLOAT32_LIMIT = 2 ** 24


def canonical_weight(module: nn.Module) -> np.ndarray:
    """The weight in ``lut_tvm.weights``' layout: dense ``[D, N]`` (``Linear.weight.T``), conv OIHW."""
    weight = module.weight.detach().cpu().numpy().astype(np.float32)
    return np.ascontiguousarray(weight.T) if isinstance(module, nn.Linear) else weight


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(name, module)]`` of the Linear and plain Conv2d layers (grouped convs stay float)."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found.append((name, module))
        elif isinstance(module, nn.Conv2d):
            if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
                LOG.info("exact quantization skips %s (groups %d, padding %r)", name, module.groups,
                         module.padding)
                continue
            found.append((name, module))
    return found


@dataclass
class CalibratedLayer:
    """One layer after calibration: its int8 input scale and output positions per sample."""

    name: str
    kind: LayerKind
    weight: np.ndarray  # canonical layout
    bias: np.ndarray | None
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
        self.rows = None

    def add(self, x: torch.Tensor) -> None:
        flat = x.detach().abs().reshape(-1).cpu().numpy()
        self.peak = max(self.peak, float(flat.max(initial=0.0)))
        take = min(flat.size, max(0, self.max_values - self.kept))
        if take:
            self.values.append(flat[self.rng.choice(flat.size, take, replace=False)])
            self.kept += take


def calibrate_layers(model: nn.Module, calibration, *, method: str = "max", batch_size: int = 256,
                     max_values: int = 1 << 20, seed: int = 0, names=None) -> list[CalibratedLayer]:
    """Run ``calibration`` (samples on axis 0) through ``model``; one entry per quantizable layer.

    ``names`` restricts the layers (unknown names raise PlanError). Layers that the calibration
    forward never reaches are left out (logged).
    """
    layers = quantizable_layers(model)
    if names is not None:
        known = {n for n, _ in layers}
        unknown = sorted(set(names) - known)
        if unknown:
            raise PlanError(f"layer(s) {unknown} are not quantizable layers of {type(model).__name__}; "
                            f"its layers are {sorted(known)}")
        layers = [(n, m) for n, m in layers if n in set(names)]
    rng = np.random.default_rng(seed)
    stats = {name: _InputStats(max_values, rng) for name, _ in layers}
    samples = torch.as_tensor(np.asarray(calibration, dtype=np.float32))
    if len(samples) == 0:
        raise PlanError("calibration needs at least one sample")

    def hook(name):
        def record(_module, inputs, output):
            stats[name].add(inputs[0])
            stats[name].rows = int(np.prod(output.shape[2:] if output.dim() == 4 else output.shape[1:-1]))
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for chunk in samples.split(batch_size):
                model(chunk)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    calibrated = []
    for name, module in layers:
        stat = stats[name]
        if stat.rows is None:
            LOG.info("exact quantization skips %s: not reached by the calibration forward", name)
            continue
        values = np.array([stat.peak], np.float32) if method == "max" else np.concatenate(stat.values)
        bias = None if module.bias is None else module.bias.detach().cpu().numpy().astype(np.float32)
        kind = LayerKind.DENSE if isinstance(module, nn.Linear) else LayerKind.CONV2D
        # a model that is itself one layer has the module name "": its plan layer needs a name
        calibrated.append(CalibratedLayer(name or type(module).__name__.lower(), kind, canonical_weight(module), bias,
                                          calibrate_activation_scale(values, method), stat.rows))
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


def quantize_model(model: nn.Module, calibration, bits=8, *, method: str = "max", batch_size: int = 256,
                   names=None, seed: int = 0) -> ExactPlan:
    """Post-training quantization: calibrated int8 inputs, per-channel ``bits``-bit weights."""
    layers = calibrate_layers(model, calibration, method=method, batch_size=batch_size, seed=seed,
                              names=names)
    return build_plan(layers, bits, {"method": "ptq", "calibration": method,
                                     "samples": int(len(calibration)), "model": type(model).__name__})


# ------------------------------------------------------------------ exact fake-quant evaluation

class Backend(str, Enum):
    """How a planned layer's integer product is computed."""

    FAKE_QUANT = "fake_quant"  # torch float32/float64 GEMM on integer values (exact, fast)
    REFERENCE_LUT = "reference_lut"  # NumPy bit-plane exact LUT (reference.exact_lut_matmul)


class ExactQuantLayer(nn.Module):
    """A Linear or Conv2d replaced by the integer reference's computation (see module doc)."""

    def __init__(self, module: nn.Module, layer: ExactLayerPlan, backend: Backend):
        super().__init__()
        wq = layer.quantized_weight(canonical_weight(module))  # [D, N] int8, fingerprint checked
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
        self.packed = pack_exact(wq, layer.bits) if self.backend is Backend.REFERENCE_LUT else None

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
            rows, (batch, out_h, out_w) = conv_rows(ints, kernel, stride, padding, dilation)
            y = self._dequantize(torch.from_numpy(exact_lut_matmul(rows, self.packed)))
            return y.reshape(batch, out_h, out_w, -1).permute(0, 3, 1, 2).contiguous()
        flat = ints.reshape(-1, ints.shape[-1])
        acc = torch.from_numpy(exact_lut_matmul(flat, self.packed)).reshape(*ints.shape[:-1], -1)
        return self._dequantize(acc)


class QuantizedTorchModel(nn.Module):
    """A copy of ``model`` whose planned layers compute exactly what the integer reference does."""

    def __init__(self, model: nn.Module, plan: ExactPlan, backend: Backend = Backend.FAKE_QUANT):
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        by_print = plan.by_fingerprint()
        bound = set()
        for name, module in quantizable_layers(self.model):
            layer = by_print.get(fingerprint(canonical_weight(module)))
            if layer is None:
                continue
            replacement = ExactQuantLayer(module, layer, backend)
            parent, _, attr = name.rpartition(".")
            if not name:  # the model is itself one layer
                self.model = replacement
            else:
                setattr(self.model.get_submodule(parent) if parent else self.model, attr, replacement)
            bound.add(layer.weight_fingerprint)
        missing = [layer.name for layer in plan.layers if layer.weight_fingerprint not in bound]
        if missing:
            raise PlanError(f"exact plan layer(s) {missing} match no Linear/Conv2d weight of "
                            f"{type(model).__name__}: the plan was made for another model")

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
