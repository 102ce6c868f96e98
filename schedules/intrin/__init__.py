"""Tensor intrinsics of lut_tvm's LUT kernels (registered with TVM on import)."""

from .lut_shuffle import (  # noqa: F401
    LUT16_SHUFFLE_AVX2,
    LUT16_SHUFFLE_AVX512,
    LUT16_SHUFFLE_NEON,
    LUT16_SHUFFLE_LANES,
    shuffle_intrin_for_target,
)
from .lut_vbmi import (  # noqa: F401
    LUT32_VBMI,
    LUT64_VBMI,
    lookup_intrin_for_target,
    shuffle_centroids,
)
