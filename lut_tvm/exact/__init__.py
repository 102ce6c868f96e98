"""LUT-NA's exact mode: quantized layers computed by table lookup, bit-exact against integer GEMM.

* ``reference`` — NumPy integer reference: weight/activation quantization, integer GEMM, and the
  exact LUT decomposition (bit planes x groups of 4 activations, shift-and-add).
* ``conv_reference`` — the same for conv2d (im2col rows), ``int_conv2d``.
* ``cost`` — per-layer / per-model operation counts (look-ups, adds, shifts, table bytes) against
  a traditional full-product LUT and plain MACs, with documented area/energy parameters.
* ``plan`` — the versioned exact plan (bits and scales per layer, bound by weight fingerprint).
* ``quantize`` — post-training quantization of a model (torch module, .onnx, .pt2) to an ExactPlan,
  its layers found by the compiler's own discovery, and the torch fake-quant model that
  reproduces the integer reference bit for bit (torch).
* ``mixed_precision`` — per-layer bits at least cost within an accuracy bound (torch).
* ``prune`` — lottery-ticket iterative magnitude pruning with weight rewinding (torch).

Names are imported on first use: ``reference``, ``cost`` and ``plan`` import neither TVM nor
torch, and importing this package imports none of the torch modules. The compiled kernel lives
in ``schedules.exact_lut_compute``.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "ExactPlan": "plan",
    "ExactLayerPlan": "plan",
    "CostParams": "cost",
    "ModelCost": "cost",
    "layer_cost": "cost",
    "format_report": "cost",
    "int_conv2d": "conv_reference",
    "quantize_model": "quantize",
    "calibrate_layers": "quantize",
    "build_plan": "quantize",
    "QuantizedTorchModel": "quantize",
    "evaluate_quantized": "quantize",
    "Backend": "quantize",
    "search_bits": "mixed_precision",
    "SearchResult": "mixed_precision",
    "CostTable": "mixed_precision",
    "lottery_ticket": "prune",
    "LotteryConfig": "prune",
    "LotteryResult": "prune",
    "pruning_schedule": "prune",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
