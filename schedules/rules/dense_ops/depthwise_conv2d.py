"""CPU schedule for stride-1 depthwise conv2d in NCHW (one input channel per group): a vector of
output columns per window tap, the padding materialized once (``pool2d.schedule_window``)."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from ._loops import is_cpu_target
from ._tiling import split_main_block
from .pool2d import _keep_padding, _unit_stride, schedule_window


class DepthwiseConv2d(ScheduleRule):
    """``out[n, f, y, x] += pad[n, f + rc, y + ry, x + rx] * w[f, rc, ry, rx]`` (``rc`` of extent 1), with
    its fused epilogue (bias, relu). The direct conv2d rule vectorizes over output channels, which a
    depthwise conv does not reduce over; the fallback it fell to ran one scalar FMA per tap
    (136 x 28 x 28, 3x3: 0.167 -> 0.038 ms at 1 thread). Strided ones (a gather per lane) decline."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool):
        if not isinstance(func, tirx.PrimFunc) or not is_cpu_target(target):
            return None
        sch = s_tir.Schedule(func)
        kept: list = []
        split = split_main_block(sch, "SSSSRRR", keep=_keep_padding(kept))
        if split is None or len(sch.get(split[0].block_rv).reads) != 2 or not _unit_stride(sch, split[0].block_rv):
            return None
        if split[0].dom()[4] != 1:
            return None  # more than one input channel per output channel: a grouped conv
        return schedule_window(sch, *split, kept, target)
