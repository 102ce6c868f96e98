"""RewriteGroupedConv2dToLUT: replace planned grouped / depthwise ``conv2d(x, const W)`` by encode + lookup.

Before: ``FoldConstant`` has run; convs are NCHW/OIHW float32 with a constant weight ``[O, I/G, kh,
kw]``. After: for each conv with groups G > 1 whose weight fingerprint the plan names (a plan layer
with the same ``groups``), one of two lowerings of the same numbers:

* block diagonal, where the byte-shuffle lookup serves the layer (``use_shuffle_lookup``), G is at
  most ``BLOCK_DIAGONAL_MAX_GROUPS`` and its tables stay small (``C * K * O <=
  BLOCK_DIAGONAL_TABLE_BYTES``): the conv as the equivalent
  ungrouped conv (``weights.ungrouped_weight``, zeros off each group) through RewriteConv2dToLUT's
  kernels (row encode + shuffle lookup, bias / ReLU then folded by FuseLUTEpilogue). Its tables
  ``[C, K, O]`` are zero off each group's outputs, which leaves every INT8 scale and level that of
  the compact grouped tables: the output is the grouped LUT's, with G times the lookups, which the
  shuffle does faster than the gather does the compact ones while G is small.
* grouped: the full input encoded (the row encode ``encode_conv2d_rows_func`` where the target has
  a lookup intrinsic and enough rows, ``use_shuffle_lookup``; else ``encode_conv2d_func``; group
  ``g``'s codebooks read its channels only, since no codebook spans two groups), then the grouped
  lookup (``schedules.lut_grouped_compute``) sums each output channel's own group's compact tables
  ``[C, K, O/G]`` into NCHW (bias zero; a following bias add stays a Relax op).

Tables and scales are ``reference.build_grouped_tables`` / ``quantize_grouped_tables`` (or the
plan's free tables ``[C, K, O/G]``). Groups = 1 convs are RewriteConv2dToLUT's.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.ir.transform import module_pass

from lut_tvm.errors import PlanError
from lut_tvm.plan import LayerPlan, TableQuant
from lut_tvm.reference import build_grouped_tables, column_scale, quantize_grouped_tables
from lut_tvm.weights import fingerprint, ungrouped_weight
from schedules.lut_grouped_compute import lookup_grouped_conv2d_func
from schedules.lut_conv_shuffle_compute import encode_conv2d_rows_func
from schedules.lut_kernels import encode_conv2d_func

from .layer_sites import LayerSite, match_grouped_conv2d
from .lut_layer_builder import emit_encode, use_shuffle_lookup
from .planned_rewriter import PlannedRewritePass, const, kernel_call
from .rewrite_conv2d_to_lut import RewriteConv2dToLUT

# When the block-diagonal lowering is taken: G at most this, tables (C * K * O int8 bytes, G times the
# compact ones) at most that. Measured on Zen 4, 2 cores, loaded machine, ms block diagonal / grouped:
# 3x3 G=2 and G=4 64->64 at 28x28 0.34 / 0.52; depthwise 32 at 56x56 0.45 / 0.45; depthwise 128 at
# 28x28 0.57 / 0.45; depthwise 256 at 14x14 0.80 / 0.48; depthwise 512 at 7x7 1.69 / 0.93.
BLOCK_DIAGONAL_MAX_GROUPS = 16
BLOCK_DIAGONAL_TABLE_BYTES = 1024 * 1024


def check_groups(site: LayerSite, layer: LayerPlan) -> None:
    """A plan layer for a grouped conv must have the conv's groups (its tables are laid out by group)."""
    if int(layer.groups) != site.groups:
        raise PlanError(f"plan layer {layer.name!r}: field 'groups' is {layer.groups}, but the "
                        f"model's conv has groups = {site.groups}")


class GroupedLutConstants:
    """The constant operands of one grouped LUT conv: centroids, norms, INT8 tables ``[C, K, O/G]``,
    the per-channel scale vector and a zero bias."""

    def __init__(self, site: LayerSite, layer: LayerPlan):
        check_groups(site, layer)
        centroids = layer.centroids.astype(np.float32)
        self.groups = site.groups
        self.out_features = int(site.weight.shape[0])
        if layer.tables is not None:
            real = np.asarray(layer.tables, dtype=np.float64)
        else:
            real = build_grouped_tables(centroids, site.weight, self.groups)
        tables_q, scale = quantize_grouped_tables(real, self.groups, TableQuant(layer.table_quant).granularity)
        self.num_codebooks, self.num_centroids, self.sub_len = centroids.shape
        self.encode_operands = [const(centroids),
                                const((centroids.astype(np.float64) ** 2).sum(-1).astype(np.float32))]
        self.table = const(tables_q)
        self.scale = const(column_scale(scale, self.out_features))
        self.bias = const(np.zeros(self.out_features, dtype=np.float32))


def block_diagonal_layer(site: LayerSite, layer: LayerPlan) -> tuple[LayerSite, LayerPlan]:
    """The grouped conv as its equivalent ungrouped conv: the site with the block-diagonal weight
    ``[O, I, kh, kw]`` and the plan layer with groups 1 (free tables widened to ``[C, K, O]`` with
    zeros off each group's outputs)."""
    weight = ungrouped_weight(site.weight, site.groups)
    tables = None
    if layer.tables is not None:
        num_codebooks, num_centroids, per_group = layer.tables.shape
        tables = np.zeros((num_codebooks, num_centroids, per_group * site.groups), np.float32)
        per_books = num_codebooks // site.groups
        for group in range(site.groups):
            tables[group * per_books:(group + 1) * per_books, :, group * per_group:(group + 1) * per_group] = \
                layer.tables[group * per_books:(group + 1) * per_books]
    full_site = LayerSite(site.kind, weight, fingerprint(weight), site.input_shape, site.geometry)
    full_layer = LayerPlan(layer.name, layer.kind, weight.shape, full_site.fingerprint, layer.centroids,
                           table_quant=layer.table_quant, tables=tables)
    return full_site, full_layer


def use_block_diagonal(site: LayerSite, layer: LayerPlan) -> bool:
    """Whether the block-diagonal lowering serves this layer (see the module doc)."""
    out_channels = int(site.weight.shape[0])
    if (site.groups > BLOCK_DIAGONAL_MAX_GROUPS
            or layer.num_codebooks * layer.num_centroids * out_channels > BLOCK_DIAGONAL_TABLE_BYTES):
        return False
    batch, _, height, width = site.input_shape
    out_h, out_w = site.geometry.output_hw(height, width)
    return use_shuffle_lookup(batch * out_h * out_w, layer.num_centroids)


@module_pass(opt_level=0, name="RewriteGroupedConv2dToLUT")
class RewriteGroupedConv2dToLUT(PlannedRewritePass):
    """Rewrite the plan's grouped and depthwise conv2d layers into LUT primitives."""

    match = staticmethod(match_grouped_conv2d)

    def emit(self, builder: relax.BlockBuilder, call: relax.Call, site: LayerSite,
             layer: LayerPlan) -> relax.Expr:
        check_groups(site, layer)
        if use_block_diagonal(site, layer):
            full_site, full_layer = block_diagonal_layer(site, layer)
            return RewriteConv2dToLUT(self.plan).emit(builder, call, full_site, full_layer)
        consts = GroupedLutConstants(site, layer)
        batch, _, height, width = site.input_shape
        out_h, out_w = site.geometry.output_hw(height, width)
        out_shape = (batch, consts.out_features, out_h, out_w)
        if use_shuffle_lookup(batch * out_h * out_w, consts.num_centroids):  # the row encode's codes
            codes_shape = (consts.num_codebooks, batch * out_h * out_w)
            encode = encode_conv2d_rows_func(site.input_shape, site.geometry, consts.num_codebooks,
                                             consts.num_centroids, consts.sub_len)
            codes = emit_encode(builder, encode, "lut_encode_conv2d_rows", call.args[0], consts, codes_shape)
            lookup = lookup_grouped_conv2d_func(codes_shape, consts.num_centroids, consts.out_features,
                                                consts.groups, out_shape=out_shape)
        else:
            codes_shape = (batch, out_h, out_w, consts.num_codebooks)
            encode = encode_conv2d_func(site.input_shape, site.geometry, consts.num_codebooks,
                                        consts.num_centroids, consts.sub_len)
            codes = emit_encode(builder, encode, "lut_encode_conv2d", call.args[0], consts, codes_shape)
            lookup = lookup_grouped_conv2d_func(codes_shape, consts.num_centroids, consts.out_features,
                                                consts.groups)
        return kernel_call(builder, lookup, "lut_lookup_grouped_conv2d",
                           [codes, consts.table, consts.scale, consts.bias], out_shape)
