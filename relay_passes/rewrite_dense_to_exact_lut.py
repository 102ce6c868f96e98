"""RewriteDenseToExactLUT: replace planned ``matmul(x, const W)`` by LUT-NA's exact LUT kernel.

Before: ``FoldConstant`` has run, so dense layers read ``matmul(x, const W[D, N])`` (x of rank
>= 2, float32). After: for each matmul whose weight fingerprint the exact plan names, ``x`` is
reshaped to ``[M, D]`` and one ``call_tir`` quantizes it (int8, the plan's ``act_scale``),
computes ``xq @ Wq`` exactly by bit-plane table look-ups over the nonzero groups, and
dequantizes (``float32(acc) * act_scale * w_scale[n]``), reshaped back to ``[..., N]``; the
graph's following bias add / activation stay as they are (FuseExactBias folds the bias in).
The look-up form (``lookup``: auto, gather or shuffle) is described in ``exact_layer_builder``.
Other matmuls are left alone.
"""

from __future__ import annotations

from tvm import relax
from tvm.ir.transform import module_pass

from lut_tvm.exact.plan import ExactLayerPlan
from lut_tvm.weights import output_length

from .exact_layer_builder import ExactRewritePass, emit_exact_layer
from .layer_sites import LayerSite, match_dense
from .planned_rewriter import emit_on_rows


@module_pass(opt_level=0, name="RewriteDenseToExactLUT")
class RewriteDenseToExactLUT(ExactRewritePass):
    """Rewrite the exact plan's dense layers into exact (LUT-NA) LUT kernels."""

    match = staticmethod(match_dense)

    def emit(self, builder: relax.BlockBuilder, call: relax.Call, site: LayerSite,
             layer: ExactLayerPlan) -> relax.Expr:
        return emit_on_rows(
            builder, call, site, output_length(site.kind, site.weight.shape),
            lambda data, shape: emit_exact_layer(builder, data, site, layer, shape, self.lookup))
