"""lut_tvm: run neural networks by table lookup (LUT-NN) on stock Apache TVM.

Names are imported on first use, so ``import lut_tvm`` is cheap and never imports torch
(torch is imported only to compile or train a torch module), and the graph passes can import
``lut_tvm``'s small modules without a cycle.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "compile": "compiler",
    "build_kmeans_plan": "planner",
    "PlanPolicy": "policy",
    "CompiledModel": "runtime",
    "load": "runtime",
    "LayerPlan": "plan",
    "Plan": "plan",
    "TableQuant": "plan",
    "LayerKind": "weights",
    "ArtifactError": "errors",
    "LutTvmError": "errors",
    "ModelLoadError": "errors",
    "PlanError": "errors",
    "TargetError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lut_tvm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
