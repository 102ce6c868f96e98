"""lut_tvm: run neural networks by table lookup (LUT-NN) on stock Apache TVM.

Names are imported on first use, so ``import lut_tvm`` is cheap and never imports torch
(torch is imported only to compile or train a torch module), and the graph passes can import
``lut_tvm``'s small modules without a cycle.
"""

from __future__ import annotations

from ._lazy import lazy_exports

_EXPORTS = {
    "compile": "compiler",
    "build_kmeans_plan": "planner",
    "optimize": "optimizer",
    "OptimizeResult": "optimizer",
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
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
