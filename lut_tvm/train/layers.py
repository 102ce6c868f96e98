"""Trainable LUT layers: hard argmin + INT8 tables in the forward pass, soft assignment in the backward.

``LutLinear`` and ``LutConv2d`` hold the original layer's weight and bias, the centroids
``[C, K, V]`` and a temperature ``t = exp(log_temperature)``, all trainable. Rows (a conv's
im2col'd windows, flattened ``(c_in, kh, kw)`` like ``reference.im2col_nchw``) are split into
``C`` sub-vectors of length ``V``; ``d = ||P||^2 - 2 x.P``.

* hard: ``code = argmin_k d`` (first index on ties), tables ``T = P.W`` built and quantized to
  INT8 exactly as ``reference.quantize_tables(reference.build_tables(P, W), granularity)`` (float64,
  one scale ``max|T|/127`` per layer or, with ``LutLayer.table_quant`` ``int8_per_column``, per
  output column; round half to even, clip +-127), ``acc = sum_c Tq[c, code]`` and
  ``acc * scale[n] + bias`` in float32: the value the compiled kernels compute. The rounding is a
  straight-through estimator, so the hard path alone passes gradients to P and W through the table.
* soft: ``softmax(-d / t) @ T`` with the real-valued table.
* free tables (``LutLayer.set_tables``, MADDNESS's ridge refit): a layer may carry its own tables
  ``T [C, K, N]`` in place of ``P.W``; both paths then read them and the weight is unused.
  ``export_plan`` writes them into the plan (a version-2 plan), and the compiler uses them.
* grouped convs (``LutConv2d.groups`` G > 1): the rows are the full im2col windows (group-major),
  the centroids ``[G * C_g, K, V]``, and ``weight_dn`` the block-diagonal ``[G * D_g, O]`` matrix
  (``weights.grouped_dense_matrix``): its tables are zero off each group's outputs, which leaves the
  per-layer and per-column INT8 scales and levels those of the compact grouped tables
  (``reference.quantize_grouped_tables``), so the hard forward is the compiled grouped LUT's.
* ste (training default): the value of hard, the gradient of soft
  (``hard.detach() + soft - soft.detach()``: the same gradient as ``soft + (hard - soft).detach()``,
  but a value bit-identical to hard). Outside training or without autograd, ste runs hard only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..plan import TableQuant
from ..reference import INT8_MAX, TABLE_SCALE_GRANULARITIES, conv_output_hw, conv_padding4, pair
from ..weights import LayerKind, canonical_weight, not_lut_reason

MODES = ("ste", "hard", "soft")


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even (like ``np.rint``) with an identity gradient."""
    return x + (torch.round(x) - x).detach()


def build_tables(centroids: torch.Tensor, weight_dn: torch.Tensor) -> torch.Tensor:
    """``T[c, k, n] = P[c, k] . W[cV:(c+1)V, n]`` ``[C, K, N]``, in the inputs' dtype."""
    num_codebooks, _, sub_len = centroids.shape
    blocks = weight_dn.reshape(num_codebooks, sub_len, weight_dn.shape[1])
    return torch.einsum("ckv,cvn->ckn", centroids, blocks)


def quantize_tables(tables: torch.Tensor, granularity: str = "layer") -> tuple[torch.Tensor, torch.Tensor]:
    """INT8 levels of ``tables [C, K, N]`` (float64, integer-valued, STE round) and the float64 scale:
    a scalar (``granularity="layer"``) or one per output column ``[N]`` (``"column"``).

    Value-identical to ``reference.quantize_tables`` given float64 tables (build them from float64
    centroids and weights, as the reference does); the scale is a constant for autograd.
    """
    if granularity not in TABLE_SCALE_GRANULARITIES:
        raise ValueError(f"table scale granularity {granularity!r} is not one of {TABLE_SCALE_GRANULARITIES}")
    tables = tables.double()
    magnitude = tables.detach().abs()
    peak = magnitude.max() if granularity == "layer" else magnitude.reshape(-1, tables.shape[-1]).amax(0)
    scale = torch.where(peak > 0, peak / INT8_MAX, torch.ones_like(peak))
    return torch.clamp(round_ste(tables / scale), -INT8_MAX, INT8_MAX), scale


def centroid_distances(subs: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``||P||^2 - 2 x.P`` ``[M, C, K]`` for sub-vectors ``[M, C, V]``, as the encode kernel computes it
    (norms summed in float64, then the working dtype)."""
    norms = (centroids.double() ** 2).sum(-1).to(centroids.dtype)
    return norms - 2.0 * torch.einsum("mcv,ckv->mck", subs, centroids)


def hard_output(one_hot, centroids, weight_dn, tables=None, granularity: str = "layer", dtype=torch.float32):
    """The hard LUT output ``[M, N]`` for ``one_hot [M, C, K]`` codes (or the integer codes ``[M, C]``
    themselves: the same sums, read by ``embedding_bag``, far cheaper than the one-hot matmul when
    ``C*K >> D``): the INT8 tables of ``P.W`` (float64, or the free ``tables``) at ``granularity``,
    summed, times the scale; gradients reach the centroids and weight through the tables (codes
    fixed, rounding straight through)."""
    real = build_tables(centroids.double(), weight_dn.double()) if tables is None else tables
    levels, scale = quantize_tables(real, granularity)
    # Integer-valued float32 sums are exact (|acc| <= 127*C << 2**24): acc is the int32 accumulator.
    flat_levels = levels.to(torch.float32).reshape(levels.shape[0] * levels.shape[1], -1)
    if not one_hot.is_floating_point():
        index = one_hot + torch.arange(levels.shape[0], device=one_hot.device) * levels.shape[1]
        acc = F.embedding_bag(index, flat_levels, mode="sum")
    else:
        acc = one_hot.reshape(one_hot.shape[0], -1) @ flat_levels
    return (acc * scale.to(torch.float32)).to(dtype)


def lut_matmul(rows, centroids, weight_dn, log_temperature, mode: str = "ste", tables=None,
               granularity: str = "layer"):
    """A LUT layer's ``[M, N]`` output (no bias) for ``rows [M, D]``; see the module doc for modes.

    ``tables [C, K, N]``, if given, replace ``P.W`` (``weight_dn`` is then unused); ``granularity``
    is the hard path's table scale granularity (``quantize_tables``)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    num_codebooks, num_centroids, sub_len = centroids.shape
    dist = centroid_distances(rows.reshape(len(rows), num_codebooks, sub_len), centroids)
    flat = (len(rows), num_codebooks * num_centroids)
    if mode != "hard":
        assign = torch.softmax(-dist / log_temperature.exp(), dim=-1)
        real = build_tables(centroids, weight_dn) if tables is None else tables
        soft = assign.reshape(flat) @ real.reshape(flat[1], -1)
        if mode == "soft":
            return soft
    with torch.set_grad_enabled(mode == "hard" and torch.is_grad_enabled()):
        one_hot = F.one_hot(dist.detach().argmin(-1), num_centroids).to(torch.float32)
        hard = hard_output(one_hot, centroids, weight_dn, tables, granularity, rows.dtype)
    if mode == "hard":
        return hard
    return hard.detach() + (soft - soft.detach())


def conv_rows(x: torch.Tensor, kernel, stride, padding, dilation):
    """im2col rows ``[N*OH*OW, C_in*kh*kw]`` of NCHW ``x`` and ``(N, OH, OW)``: torch's ``unfold`` with
    the rows, geometry and padding of ``reference.im2col_nchw`` (the definition; tested row for row)."""
    top, left, bottom, right = conv_padding4(padding, kernel, dilation)
    if (top, left) != (bottom, right):  # unfold pads symmetrically only
        x, (top, left) = F.pad(x, (left, right, top, bottom)), (0, 0)
    out_h, out_w = conv_output_hw(x.shape[2], x.shape[3], kernel, stride, (top, left, top, left), dilation)
    cols = F.unfold(x, pair(kernel), dilation=pair(dilation), padding=(top, left), stride=pair(stride))  # [N, D, L]
    return cols.transpose(1, 2).reshape(x.shape[0] * out_h * out_w, cols.shape[1]), (x.shape[0], out_h, out_w)


class LutLayer(nn.Module):
    """Common state of the LUT layers: weight, bias, centroids ``[C, K, V]``, log-temperature, mode."""

    kind: LayerKind

    def __init__(self, weight: torch.Tensor, bias, centroids, temperature: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        cents = torch.as_tensor(np.asarray(centroids), dtype=self.weight.dtype).clone()
        depth = self.weight_dn().shape[0]
        if cents.ndim != 3 or cents.shape[0] * cents.shape[2] != depth or not 2 <= cents.shape[1] <= 256:
            raise ValueError(f"centroids {list(cents.shape)} are not [C, K, V] with C*V = D = {depth} "
                             "and K in [2, 256]")
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature {temperature} must be a positive finite number")
        self.centroids = nn.Parameter(cents)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature), dtype=self.weight.dtype))
        self.register_parameter("tables", None)  # free tables [C, K, N] (set_tables) instead of P.W
        self.mode = "ste"
        self.table_quant = TableQuant.INT8_PER_LAYER  # the hard forward's (and the plan's) table scales

    def set_tables(self, tables) -> None:
        """Use ``tables [C, K, N]`` (e.g. ``lut_tvm.ridge.ridge_tables``) in place of ``P.W``, as a
        trainable parameter; ``None`` goes back to ``P.W``."""
        if tables is None:
            self.tables = None
            return
        if getattr(self, "groups", 1) > 1:
            raise ValueError("free tables are not supported for a grouped conv LUT layer")
        tables = torch.as_tensor(np.asarray(tables), dtype=self.weight.dtype)
        expected = (*self.centroids.shape[:2], self.weight_dn().shape[1])
        if tuple(tables.shape) != expected:
            raise ValueError(f"tables {list(tables.shape)} are not [C, K, N] = {list(expected)}")
        if not torch.isfinite(tables).all():
            raise ValueError("tables must be finite")
        self.tables = nn.Parameter(tables.clone())

    @property
    def temperature(self) -> torch.Tensor:
        """The current temperature (a detached value; training acts on ``log_temperature``)."""
        return self.log_temperature.detach().exp()

    def active_mode(self) -> str:
        """``mode``, except that ste runs hard only outside training or without autograd."""
        if self.mode == "ste" and not (self.training and torch.is_grad_enabled()):
            return "hard"
        return self.mode

    def weight_dn(self) -> torch.Tensor:
        """The weight as the ``[D, N]`` matrix the rows are multiplied by."""
        raise NotImplementedError

    def canonical_weight(self) -> np.ndarray:
        """The weight in the layout plans fingerprint (``weights.canonical_weight``), float32."""
        return canonical_weight(self.kind, self.weight.detach().cpu().numpy())

    def to_dense(self) -> nn.Module:
        """The original layer type with this layer's current weight and bias."""
        raise NotImplementedError

    def lut_rows(self, rows: torch.Tensor) -> torch.Tensor:
        out = lut_matmul(rows, self.centroids, self.weight_dn(), self.log_temperature, self.active_mode(),
                         self.tables, TableQuant(self.table_quant).granularity)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        cents = self.centroids.shape
        free = ", free tables" if self.tables is not None else ""
        quant = "" if self.table_quant == TableQuant.INT8_PER_LAYER else f", {TableQuant(self.table_quant).value}"
        return f"C={cents[0]}, K={cents[1]}, V={cents[2]}, mode={self.mode!r}{free}{quant}"


class LutLinear(LutLayer):
    """``nn.Linear`` as a LUT: ``y = LUT(x) + b`` over the last axis."""

    kind = LayerKind.DENSE

    @classmethod
    def from_linear(cls, linear: nn.Linear, centroids, temperature: float = 1.0) -> "LutLinear":
        return cls(linear.weight, linear.bias, centroids, temperature)

    def weight_dn(self):
        return self.weight.t()

    def forward(self, x):
        out = self.lut_rows(x.reshape(-1, x.shape[-1]))
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def to_dense(self):
        out_features, in_features = self.weight.shape
        dense = nn.Linear(in_features, out_features, bias=self.bias is not None)
        return _copy_params(self, dense)


def conv_padding(conv: nn.Module) -> tuple[int, int]:
    """A Conv2d's symmetric zero padding as ``(ph, pw)`` (a Conv1d's as its equivalent
    ``Conv2d((1, k))``'s, ``(0, p)``); string paddings resolved; what a LUT layer cannot reproduce
    (``weights.not_lut_reason``, asymmetric padding) refused with ValueError."""
    reason = not_lut_reason(LayerKind.CONV2D, groups=conv.groups, padding_mode=conv.padding_mode,
                            grouped=isinstance(conv, nn.Conv2d))
    if reason:
        raise ValueError(f"this {type(conv).__name__} cannot become a LUT: {reason}")
    kernel, dilation, padding = conv.kernel_size, conv.dilation, conv.padding
    if isinstance(conv, nn.Conv1d):
        kernel, dilation = (1, kernel[0]), (1, dilation[0])
        padding = padding if isinstance(padding, str) else (0, padding[0])
    top, left, bottom, right = conv_padding4(padding, kernel, dilation)
    if (top, left) != (bottom, right):
        raise ValueError("padding='same' with an even kernel span pads asymmetrically: not supported")
    return top, left


def conv1d_rows(x: torch.Tensor, kernel: int, stride: int, padding: int, dilation: int):
    """im2col rows ``[N*OL, C_in*k]`` of NCL ``x`` in ``(c_in, k)`` order, and ``(N, OL)``: ``conv_rows``
    of the equivalent ``Conv2d((1, k))`` on ``x[:, :, None, :]``."""
    rows, (batch, _, out_len) = conv_rows(x.unsqueeze(2), (1, kernel), (1, stride), (0, padding), (1, dilation))
    return rows, (batch, out_len)


class LutConv2d(LutLayer):
    """``nn.Conv2d`` (zero padding; any groups) as a LUT over its im2col'd windows; NCHW in and out."""

    kind = LayerKind.CONV2D

    def __init__(self, weight, bias, centroids, temperature=1.0, stride=1, padding=0, dilation=1, groups=1):
        if int(groups) < 1 or weight.shape[0] % int(groups):
            raise ValueError(f"groups = {groups} does not divide the {weight.shape[0]} output channels")
        self.groups = int(groups)  # before LutLayer's init: weight_dn() needs it
        super().__init__(weight, bias, centroids, temperature)
        self.stride, self.padding, self.dilation = pair(stride), pair(padding), pair(dilation)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, centroids, temperature: float = 1.0) -> "LutConv2d":
        return cls(conv.weight, conv.bias, centroids, temperature, conv.stride, conv_padding(conv),
                   conv.dilation, conv.groups)

    @property
    def kernel_size(self) -> tuple[int, int]:
        return tuple(self.weight.shape[2:])

    def weight_dn(self):
        if self.groups == 1:
            return self.weight.reshape(self.weight.shape[0], -1).t()
        blocks = self.weight.reshape(self.groups, self.weight.shape[0] // self.groups, -1)
        return torch.block_diag(*[block.t() for block in blocks])  # weights.grouped_dense_matrix

    def rows(self, x):
        """im2col rows of ``x`` for this layer's geometry, and ``(N, OH, OW)``."""
        return conv_rows(x, self.kernel_size, self.stride, self.padding, self.dilation)

    def forward(self, x):
        rows, (batch, out_h, out_w) = self.rows(x)
        out = self.lut_rows(rows)
        return out.reshape(batch, out_h, out_w, -1).permute(0, 3, 1, 2)

    def to_dense(self):
        out_ch, in_ch = self.weight.shape[:2]
        dense = nn.Conv2d(in_ch * self.groups, out_ch, self.kernel_size, stride=self.stride, padding=self.padding,
                          dilation=self.dilation, groups=self.groups, bias=self.bias is not None)
        return _copy_params(self, dense)

    def extra_repr(self):
        groups = f", groups={self.groups}" if self.groups > 1 else ""
        return f"{super().extra_repr()}, stride={self.stride}, padding={self.padding}{groups}"


def _copy_params(lut: LutLayer, dense: nn.Module) -> nn.Module:
    with torch.no_grad():
        dense.weight.copy_(lut.weight)
        if lut.bias is not None:
            dense.bias.copy_(lut.bias)
    return dense.to(lut.weight.dtype)


def lut_layers(model: nn.Module) -> list[tuple[str, LutLayer]]:
    """``[(module path, layer)]`` of every LUT layer in ``model``, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LutLayer)]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at module path ``name`` (``features.3``) of ``model``."""
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def set_mode(model: nn.Module, mode: str) -> None:
    """Set every LUT layer's mode (``ste``, ``hard`` or ``soft``)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    for _, layer in lut_layers(model):
        layer.mode = mode
