"""RewriteGroupedConv2dToLUT: replace planned grouped / depthwise ``conv2d(x, const W)`` by encode + lookup.

Before: ``FoldConstant`` has run; convs are NCHW/OIHW float32 with a constant weight ``[O, I/G, kh,
kw]``. After: for each conv with groups G > 1 whose weight fingerprint the plan names (a plan layer
with the same ``groups``), the full input is encoded window by window with the plan's ``[G * C_g,
K, V]`` centroids (``lut_kernels.encode_conv2d_func``: group ``g``'s codebooks read its channels
only, since no codebook spans two groups), and the grouped lookup
(``schedules.lut_grouped_compute``) sums each output channel's own group's compact tables ``[C, K,
O/G]`` into NCHW (bias zero; a following bias add stays a Relax op). Tables and scales are
``reference.build_grouped_tables`` / ``quantize_grouped_tables`` (or the plan's free tables).
Groups = 1 convs are RewriteConv2dToLUT's.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.ir.transform import module_pass

from lut_tvm.errors import PlanError
from lut_tvm.plan import LayerPlan, TableQuant
from lut_tvm.reference import build_grouped_tables, column_scale, quantize_grouped_tables
from schedules.lut_grouped_compute import lookup_grouped_conv2d_func
from schedules.lut_kernels import encode_conv2d_func

from .layer_sites import LayerSite, match_grouped_conv2d
from .lut_layer_builder import emit_encode
from .planned_rewriter import PlannedRewritePass, const, kernel_call


class GroupedLutConstants:
    """The constant operands of one grouped LUT conv: centroids, norms, INT8 tables ``[C, K, O/G]``,
    the per-channel scale vector and a zero bias."""

    def __init__(self, site: LayerSite, layer: LayerPlan):
        if int(layer.groups) != site.groups:
            raise PlanError(f"plan layer {layer.name!r}: field 'groups' is {layer.groups}, but the "
                            f"model's conv has groups = {site.groups}")
        centroids = layer.centroids.astype(np.float32)
        self.groups = site.groups
        self.out_features = int(site.weight.shape[0])
        if layer.tables is not None:
            real = np.asarray(layer.tables, dtype=np.float64)
        else:
            real = build_grouped_tables(centroids, site.weight, self.groups)
        tables_q, scale = quantize_grouped_tables(real, self.groups, TableQuant(layer.table_quant).granularity)
        self.num_codebooks, self.num_centroids, self.sub_len = centroids.shape
        self.centroids = const(centroids)
        self.norms = const((centroids.astype(np.float64) ** 2).sum(-1).astype(np.float32))
        self.table = const(tables_q)
        self.scale = const(column_scale(scale, self.out_features))
        self.bias = const(np.zeros(self.out_features, dtype=np.float32))


@module_pass(opt_level=0, name="RewriteGroupedConv2dToLUT")
class RewriteGroupedConv2dToLUT(PlannedRewritePass):
    """Rewrite the plan's grouped and depthwise conv2d layers into LUT primitives."""

    match = staticmethod(match_grouped_conv2d)

    def emit(self, builder: relax.BlockBuilder, call: relax.Call, site: LayerSite,
             layer: LayerPlan) -> relax.Expr:
        consts = GroupedLutConstants(site, layer)
        batch, _, height, width = site.input_shape
        out_h, out_w = site.geometry.output_hw(height, width)
        codes_shape = (batch, out_h, out_w, consts.num_codebooks)
        encode = encode_conv2d_func(site.input_shape, site.geometry, consts.num_codebooks,
                                    consts.num_centroids, consts.sub_len)
        codes = emit_encode(builder, encode, "lut_encode_conv2d", call.args[0], consts, codes_shape)
        lookup = lookup_grouped_conv2d_func(codes_shape, consts.num_centroids, consts.out_features,
                                            consts.groups)
        return kernel_call(builder, lookup, "lut_lookup_grouped_conv2d",
                           [codes, consts.table, consts.scale, consts.bias],
                           (batch, consts.out_features, out_h, out_w))
