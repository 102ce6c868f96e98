"""Default schedule of the encode kernels: per (row, codebook) distances and argmin, in parallel.

The K distances of one row and codebook are computed right before their argmin (no
``[M, C, K]`` intermediate in memory), vectorized over the K centroids; rows run in parallel.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule

from schedules.attrs import LutKind

from .lut_kind import lut_kind


class LutEncodeRule(ScheduleRule):
    """Schedules ``encode_dense`` / ``encode_conv2d`` PrimFuncs; None for anything else."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool):
        if lut_kind(func) not in (LutKind.ENCODE_DENSE, LutKind.ENCODE_CONV2D):
            return None
        sch = s_tir.Schedule(func)
        sch.compute_inline(sch.get_sblock("encode_distance"))
        sch.reverse_compute_inline(sch.get_sblock("encode_codes"))
        argmin = sch.get_sblock("encode_distance_red_temp")
        *prefix, codebook, _ = sch.get_loops(argmin)
        sch.parallel(sch.fuse(*prefix))
        sch.reverse_compute_at(sch.get_sblock("encode_distance_red"), codebook)
        dot = sch.get_sblock("encode_dot")
        sch.compute_at(dot, codebook)
        inner = sch.get_loops(dot)[2:]  # below the fused row loop and the codebook loop
        if len(inner) == 2:  # (centroid, sub-vector); V = 1 leaves no sub-vector loop
            centroid, sub = inner
            sch.reorder(sub, centroid)
            sch.vectorize(centroid)
            sch.decompose_reduction(dot, sub)
        else:
            sch.vectorize(inner[-1])
        return sch
