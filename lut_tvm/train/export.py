"""From a trained LUT model to what the compiler takes: a LUT plan and the dense model it binds to.

``export_plan`` writes one plan layer per LUT layer, bound by the fingerprint of the layer's
*current* weight; ``to_dense_model`` gives back the original architecture carrying those same
weights. ``lut_tvm.compile(to_dense_model(m), export_plan(m), ...)`` then runs the layers as the
LUT model's hard forward does (same codes, same INT8 tables). A LUT layer with free tables
(``LutLayer.set_tables``, MADDNESS's ridge refit) exports them as the plan layer's ``tables``
(plan format version 2); its weight then only binds the layer (the compiler ignores its values).
A layer's ``table_quant`` (per-column table scales) goes into its plan layer (plan format version 3).
"""

from __future__ import annotations

import copy
import os

from torch import nn

from ..plan import LayerPlan, Plan
from ..weights import fingerprint
from .layers import lut_layers, replace_module


def export_plan(lut_model: nn.Module, path: str | os.PathLike | None = None,
                provenance: dict | None = None) -> Plan:
    """The plan of ``lut_model``'s LUT layers (names = module paths); saved to ``path`` if given."""
    layers = []
    for name, layer in lut_layers(lut_model):
        weight = layer.canonical_weight()
        centroids = layer.centroids.detach().cpu().numpy().astype("float32")
        tables = None if layer.tables is None else layer.tables.detach().cpu().numpy().astype("float32")
        layers.append(LayerPlan(name, layer.kind, tuple(weight.shape), fingerprint(weight), centroids,
                                table_quant=layer.table_quant, tables=tables, groups=getattr(layer, "groups", 1)))
    info = {"method": "learned", "temperatures": {n: float(l.temperature) for n, l in lut_layers(lut_model)}}
    if getattr(lut_model, "lut_config", None) is not None:
        info["config"] = lut_model.lut_config
    plan = Plan(layers, provenance={**info, **(provenance or {})})
    plan.validate()
    if path is not None:
        plan.save(path)
    return plan


def to_dense_model(lut_model: nn.Module) -> nn.Module:
    """A copy of ``lut_model`` with every LUT layer back as its Linear / Conv2d (current weights).

    A layer with free tables comes back with its (unused) weight, which its plan layer binds to:
    compiled with ``export_plan``'s plan it runs the tables, but on its own it computes ``X.W``."""
    dense = copy.deepcopy(lut_model)
    for name, layer in lut_layers(dense):
        replace_module(dense, name, layer.to_dense())
    if hasattr(dense, "lut_config"):
        del dense.lut_config
    return dense
