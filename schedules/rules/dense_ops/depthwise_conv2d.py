"""CPU schedule for depthwise conv2d in NCHW (one input channel per group): a vector of output
columns per window tap, the padding materialized once (``pool2d.schedule_window``), de-interleaved
by column when strided."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from ._loops import is_cpu_target
from ._tiling import split_main_block
from .pool2d import _keep_padding, column_stride, deinterleave_columns, schedule_window


class DepthwiseConv2d(ScheduleRule):
    """``out[n, f, y, x] += pad[n, f + rc, y + ry, x + rx] * w[f, rc, ry, rx]`` (``rc`` of extent 1), with
    its fused epilogue (bias, relu). The direct conv2d rule vectorizes over output channels, which a
    depthwise conv does not reduce over; the fallback it fell to ran one scalar FMA per tap
    (136 x 28 x 28, 3x3: 0.167 -> 0.038 ms at 1 thread). A strided one reads its input de-interleaved
    by column (``pool2d.deinterleave_columns``), so each tap loads a vector instead of a gather."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool):
        if not isinstance(func, tirx.PrimFunc) or not is_cpu_target(target):
            return None
        sch = s_tir.Schedule(func)
        kept: list = []
        split = split_main_block(sch, "SSSSRRR", keep=_keep_padding(kept))
        if split is None or len(sch.get(split[0].block_rv).reads) != 2:
            return None
        stride = column_stride(sch, split[0].block_rv)
        if stride is None or split[0].dom()[4] != 1:
            return None  # (dom[4] > 1: more than one input channel per output channel, a grouped conv)
        if stride > 1:
            kept = deinterleave_columns(sch, split[0].block_rv, kept, stride)
        return schedule_window(sch, *split, kept, target)
