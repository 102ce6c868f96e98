"""Default CPU schedule rules for dense (non-LUT) ops; first match wins, Fallback takes anything."""

from ._loops import safe_rule
from .conv2d_nchw import Conv2dNCHW
from .depthwise_conv2d import DepthwiseConv2d
from .fallback import Fallback
from .injective import Injective
from .matmul import Matmul
from .pool2d import Pool2d
from .reduction import Reduction
from .row_reduction import RowReduction

DENSE_OP_RULES = [
    safe_rule(Matmul()),
    safe_rule(Conv2dNCHW()),
    safe_rule(Pool2d()),
    safe_rule(DepthwiseConv2d()),
    safe_rule(Reduction()),
    safe_rule(Injective()),
    safe_rule(Fallback()),
]

__all__ = [
    "DENSE_OP_RULES", "Matmul", "Conv2dNCHW", "Pool2d", "DepthwiseConv2d", "Reduction", "RowReduction", "Injective", "Fallback",
]
