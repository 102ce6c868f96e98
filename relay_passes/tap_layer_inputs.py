"""TapLayerInputs: make ``main`` return the input of every replaceable layer, for calibration.

Before: ``FoldConstant`` has run (see layer_sites). After: ``main`` takes the same inputs and
returns a tuple with, for each distinct dense/conv2d weight in binding order (its first use), the tensor that layer
multiplies (``x`` of ``matmul(x, W)`` / ``conv2d(x, W)``). Dataflow blocks are flattened so the
tapped values can leave them; everything after the last tapped layer is dead and removed.
"""

from __future__ import annotations

from tvm import relax
from tvm.ir import IRModule
from tvm.ir.transform import PassContext, module_pass

from .layer_sites import unique_layer_sites


@module_pass(opt_level=0, name="TapLayerInputs")
class TapLayerInputs:
    """Replace ``main``'s result by the tuple of its layer inputs."""

    def transform_module(self, mod: IRModule, _ctx: PassContext) -> IRModule:
        mod = relax.transform.ToNonDataflow()(mod)
        main_var = mod.get_global_var("main")
        func = mod[main_var]
        taps = [call.args[0] for call, _ in unique_layer_sites(func)]
        result = relax.BlockBuilder().normalize(relax.Tuple(taps))
        body = relax.SeqExpr(func.body.blocks, result)
        mod[main_var] = relax.Function(
            func.params, body, ret_ty=result.ty, is_pure=func.is_pure, attrs=func.attrs
        )
        return relax.transform.DeadCodeElimination()(mod)
