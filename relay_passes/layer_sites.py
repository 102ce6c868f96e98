"""Recognise the dense and conv2d calls with constant weights that a LUT plan can replace.

Matches on ops, attributes and types only. Expects constants folded (``FoldConstant``), so
that torch's ``matmul(x, permute_dims(W))`` and ONNX's ``Gemm``/``MatMul`` all read
``matmul(x, const W[D, N])``. Grouped and depthwise convs (groups > 1) are sites of their own
(``match_grouped_conv2d``, ``LayerSite.groups``): the groups = 1 passes never see them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tvm import relax
from tvm.ir import Op

from lut_tvm._tvm_compat import constant_value, is_constant

from lut_tvm.weights import LayerKind, fingerprint, not_lut_reason
from schedules.lut_compute import Conv2dGeometry

LOG = logging.getLogger("lut_tvm.passes")


@dataclass(frozen=True)
class LayerSite:
    """A replaceable layer: its kind, canonical weight, fingerprint and (for conv) geometry and
    group count (the weight of a conv with ``groups`` G is ``[O, I/G, kh, kw]``)."""

    kind: LayerKind
    weight: np.ndarray
    fingerprint: str
    input_shape: tuple[int, ...]
    geometry: Conv2dGeometry | None = None
    groups: int = 1


def static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    """The static shape of a float32 tensor expression, or None."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.dtype != "float32" or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape.values)
    except (TypeError, AttributeError):
        return None


def is_constant_nchw_conv2d(call: relax.Expr) -> bool:
    """Whether ``call`` is a ``relax.nn.conv2d`` with a constant weight, NCHW data and output, OIHW weight."""
    if not _is_op(call, "relax.nn.conv2d"):
        return False
    attrs = call.attrs
    return (is_constant(call.args[1]) and str(attrs.data_layout) == "NCHW"
            and str(attrs.kernel_layout) == "OIHW" and str(attrs.out_layout) == "NCHW")


def _is_op(call: relax.Expr, name: str) -> bool:
    return isinstance(call, relax.Call) and isinstance(call.op, Op) and call.op.name == name


def match_dense(call: relax.Expr) -> LayerSite | None:
    """A ``matmul(x, const W[D, N])`` on float32, or None."""
    if not _is_op(call, "relax.matmul"):
        return None
    data, weight = call.args
    input_shape = static_shape(data)
    if not is_constant(weight) or input_shape is None or len(input_shape) < 2:
        return None
    matrix = constant_value(weight)
    if matrix.ndim != 2 or not_lut_reason(LayerKind.DENSE, dtype=matrix.dtype):
        return None
    return LayerSite(LayerKind.DENSE, matrix, fingerprint(matrix), input_shape)


def _conv2d_site(call: relax.Expr, grouped: bool) -> LayerSite | None:
    """An NCHW/OIHW float32 ``conv2d(x, const W)`` with groups > 1 if ``grouped``, else groups = 1."""
    if not _is_op(call, "relax.nn.conv2d") or (int(call.attrs.groups) > 1) != grouped:
        return None
    data, weight = call.args
    attrs = call.attrs
    input_shape = static_shape(data)
    if not is_constant(weight) or input_shape is None:
        return None
    kernel = constant_value(weight)
    reason = not_lut_reason(LayerKind.CONV2D, groups=int(attrs.groups), dtype=kernel.dtype,
                            layouts=(attrs.data_layout, attrs.kernel_layout), grouped=grouped)
    if reason:
        LOG.info("conv2d with weight %s left dense: %s", list(kernel.shape), reason)
        return None
    geometry = Conv2dGeometry(
        kernel=(int(kernel.shape[2]), int(kernel.shape[3])),
        strides=tuple(int(s) for s in attrs.strides),
        padding=tuple(int(p) for p in attrs.padding),
        dilation=tuple(int(d) for d in attrs.dilation),
    )
    return LayerSite(LayerKind.CONV2D, kernel, fingerprint(kernel), input_shape, geometry,
                     int(attrs.groups))


def match_conv2d(call: relax.Expr) -> LayerSite | None:
    """An NCHW/OIHW float32 ``conv2d(x, const W)`` with groups = 1, or None (reason logged)."""
    return _conv2d_site(call, grouped=False)


def match_grouped_conv2d(call: relax.Expr) -> LayerSite | None:
    """An NCHW/OIHW float32 grouped or depthwise ``conv2d(x, const W)`` (groups > 1), or None."""
    return _conv2d_site(call, grouped=True)


def match_layer(call: relax.Expr) -> LayerSite | None:
    """A dense, conv2d or grouped conv2d site, or None."""
    return match_dense(call) or match_conv2d(call) or match_grouped_conv2d(call)


def collect_layer_sites(func: relax.Function) -> list[tuple[relax.Call, LayerSite]]:
    """Every replaceable call in ``func``, in binding order."""
    sites = []

    def visit(expr):
        if isinstance(expr, relax.Call):
            site = match_layer(expr)
            if site is not None:
                sites.append((expr, site))

    relax.analysis.post_order_visit(func.body, visit)
    return sites


def unique_layer_sites(func: relax.Function) -> list[tuple[relax.Call, LayerSite]]:
    """The first call of each distinct weight (a shared weight is one layer), in binding order."""
    seen, unique = set(), []
    for call, site in collect_layer_sites(func):
        if site.fingerprint not in seen:
            seen.add(site.fingerprint)
            unique.append((call, site))
    return unique
