"""lut_tvm: run neural networks by table lookup (LUT-NN) on stock Apache TVM.

Compiling needs no torch: ``import lut_tvm`` pulls in TVM and NumPy only; torch is imported
when a torch module is compiled or trained.
"""

from .compiler import compile  # pylint: disable=redefined-builtin
from .errors import ArtifactError, LutTvmError, ModelLoadError, PlanError, TargetError
from .plan import LayerPlan, Plan, TableQuant
from .planner import PlanPolicy, build_kmeans_plan
from .runtime import CompiledModel, load
from .weights import LayerKind

__all__ = [
    "ArtifactError", "CompiledModel", "LayerKind", "LayerPlan", "LutTvmError", "ModelLoadError",
    "Plan", "PlanError", "PlanPolicy", "TableQuant", "TargetError", "build_kmeans_plan",
    "compile", "load",
]
