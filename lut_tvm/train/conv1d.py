"""``LutConv1d``: an ``nn.Conv1d`` as a LUT over its im2col'd windows, and ``convert_conv1d``.

A Conv1d with kernel ``k`` is the Conv2d with kernel ``(1, k)`` on an input of height 1, so the
rows are the same ``(c_in, kw)``-ordered windows ``conv_rows`` gives for that Conv2d (and
``reference.im2col_nchw`` for ``x[:, :, None, :]``): the hard forward is bit-for-bit
``reference.lut_conv2d`` of the height-1 input. Default ``V`` is the kernel length (one input
channel's window, as V = 9 for a 3x3 conv).

Plans: ``LayerKind`` has no conv1d, so ``canonical_weight`` (``weights.canonical_weight`` of the
3-D weight) is the ``[O, I, 1, k]`` Conv2d weight and
``kind`` is ``CONV2D``: ``export_plan`` writes a conv2d layer that binds to the equivalent
``Conv2d((1, k))`` (``to_conv2d``). ``to_dense`` gives back the ``nn.Conv1d`` (the training
architecture); a graph imported with a real ``conv1d`` op is not matched by the compiler yet.

``convert_conv1d`` replaces the Conv1d layers a ``PlanPolicy`` chooses (``skip_first_conv`` is the
first Conv1d in registration order; ``only`` / ``exclude`` / ``sub_len_overrides`` by module path),
with k-means centroids of each layer's input rows recorded on the *original* model, as
``convert`` does for Linear / Conv2d. ``convert_with_conv1d`` does both in one call.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from ..errors import LutTvmError, PlanError
from ..weights import LayerKind, not_lut_reason
from .convert import LutConfig, apply_table_refit, convert_kmeans, kmeans_lut_copy
from .layers import LutLayer, _copy_params, conv1d_rows, conv_padding

LOG = logging.getLogger("lut_tvm")


def _int(value) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


class LutConv1d(LutLayer):
    """``nn.Conv1d`` (groups = 1, zero padding) as a LUT over its im2col'd windows; NCL in and out."""

    kind = LayerKind.CONV2D  # as the equivalent Conv2d((1, k)); see the module doc

    def __init__(self, weight, bias, centroids, temperature=1.0, stride=1, padding=0, dilation=1):
        super().__init__(weight, bias, centroids, temperature)
        self.stride, self.padding, self.dilation = _int(stride), _int(padding), _int(dilation)

    @classmethod
    def from_conv(cls, conv: nn.Conv1d, centroids, temperature: float = 1.0) -> "LutConv1d":
        return cls(conv.weight, conv.bias, centroids, temperature, conv.stride, conv_padding(conv)[1],
                   conv.dilation)

    @property
    def kernel_size(self) -> int:
        return int(self.weight.shape[2])

    def weight_dn(self):
        return self.weight.reshape(self.weight.shape[0], -1).t()

    def rows(self, x):
        """im2col rows of ``x`` for this layer's geometry, and ``(N, OL)``."""
        return conv1d_rows(x, self.kernel_size, self.stride, self.padding, self.dilation)

    def forward(self, x):
        rows, (batch, out_len) = self.rows(x)
        out = self.lut_rows(rows)
        return out.reshape(batch, out_len, -1).permute(0, 2, 1)

    def to_dense(self):
        out_ch, in_ch = self.weight.shape[:2]
        dense = nn.Conv1d(in_ch, out_ch, self.kernel_size, stride=self.stride, padding=self.padding,
                          dilation=self.dilation, bias=self.bias is not None)
        return _copy_params(self, dense)

    def to_conv2d(self) -> nn.Conv2d:
        """The equivalent ``Conv2d((1, k))`` on inputs ``x[:, :, None, :]`` (what a plan binds to)."""
        out_ch, in_ch = self.weight.shape[:2]
        dense = nn.Conv2d(in_ch, out_ch, (1, self.kernel_size), stride=(1, self.stride),
                          padding=(0, self.padding), dilation=(1, self.dilation), bias=self.bias is not None)
        with torch.no_grad():
            dense.weight.copy_(self.weight[:, :, None, :])
            if self.bias is not None:
                dense.bias.copy_(self.bias)
        return dense.to(self.weight.dtype)

    def extra_repr(self):
        return f"{super().extra_repr()}, stride={self.stride}, padding={self.padding}"


def select_conv1d(model: nn.Module, policy) -> list[tuple[str, nn.Conv1d, int]]:
    """``[(module path, Conv1d, V)]`` the policy makes LUTs (``PlanPolicy.choose`` over the Conv1d
    layers that ``weights.not_lut_reason`` allows, as convs; V defaults to the kernel length)."""
    convs = [(n, m) for n, m in model.named_modules() if type(m) is nn.Conv1d
             and not not_lut_reason(LayerKind.CONV2D, groups=m.groups, dtype=m.weight.dtype)]
    others = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    chosen_names = set(policy.choose([(name, LayerKind.CONV2D) for name, _ in convs], other_names=others))
    chosen = []
    for name, conv in convs:
        if name not in chosen_names:
            continue
        sub_len = int(policy.sub_len_overrides.get(name, conv.kernel_size[0]))
        depth = conv.in_channels * conv.kernel_size[0]
        if depth % sub_len:
            raise PlanError(f"layer {name!r}: reduction length D = {depth} is not a multiple of "
                            f"V = {sub_len}; set another V for it (sub_len_overrides)")
        conv_padding(conv)
        chosen.append((name, conv, sub_len))
    return chosen


def convert_conv1d(model: nn.Module, config: LutConfig | None = None, calibration_data=None,
                   source: nn.Module | None = None) -> nn.Module:
    """A deep copy of ``model`` with the policy's Conv1d layers as k-means-initialised ``LutConv1d``,
    then the policy's table refit of its LUT layers against ``source``.

    Rows are recorded on ``source`` (default ``model``), which must have the same module paths:
    pass the original model when ``model`` is already a partly converted copy of it.
    """
    config = config or LutConfig()
    lut_model = convert_conv1d_kmeans(model, config, calibration_data, source)
    return apply_table_refit(lut_model, model if source is None else source, config, calibration_data)


def convert_conv1d_kmeans(model: nn.Module, config: LutConfig | None = None, calibration_data=None,
                          source: nn.Module | None = None) -> nn.Module:
    """``convert_conv1d`` without the table refit."""
    config = config or LutConfig()
    if calibration_data is None:
        raise LutTvmError("convert_conv1d needs calibration_data: k-means runs on each layer's real inputs")
    source = model if source is None else source
    chosen = select_conv1d(source, config.policy)
    if not chosen:
        LOG.warning("convert_conv1d: the policy chose no Conv1d layer")
        return copy.deepcopy(model)
    return kmeans_lut_copy(model, source, chosen, calibration_data, config, LutConv1d.from_conv, " (conv1d)")

def convert_with_conv1d(model: nn.Module, config: LutConfig | None = None, calibration_data=None) -> nn.Module:
    """``convert`` (Linear / Conv2d) then ``convert_conv1d``, both with rows from the original ``model``.

    ``convert`` applies ``skip_first_conv`` to Conv2d layers only and ``convert_conv1d`` to Conv1d
    layers only; ``skip_last_dense`` applies to the Linears as usual.
    """
    config = config or LutConfig()
    has_other = any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in model.modules())
    partial = convert_kmeans(model, config, calibration_data) if has_other else model
    lut_model = convert_conv1d_kmeans(partial, config, calibration_data, source=model)
    return apply_table_refit(lut_model, model, config, calibration_data).eval()
