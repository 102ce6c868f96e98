"""Graph passes on Relax that turn planned dense/conv2d layers into LUT primitives, one per file."""

from .fuse_exact_bias import FuseExactBias
from .fuse_lut_epilogue import FuseLUTEpilogue
from .rewrite_conv2d_to_exact_lut import RewriteConv2dToExactLUT
from .rewrite_conv2d_to_lut import RewriteConv2dToLUT
from .rewrite_dense_to_exact_lut import RewriteDenseToExactLUT
from .rewrite_dense_to_int8 import RewriteDenseToInt8
from .rewrite_dense_to_lut import RewriteDenseToLUT
from .tap_layer_inputs import TapLayerInputs

__all__ = ["FuseExactBias", "FuseLUTEpilogue", "RewriteConv2dToExactLUT", "RewriteConv2dToLUT",
           "RewriteDenseToExactLUT", "RewriteDenseToInt8", "RewriteDenseToLUT", "TapLayerInputs"]
