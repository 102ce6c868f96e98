"""Attribute keys that tag lut_tvm's own PrimFuncs, defined once."""

# Function attribute naming which LUT primitive a PrimFunc computes (a value of LutKind).
LUT_KIND_ATTR = "lut_tvm.kind"
# Relax's operator-pattern attribute; kOpaque keeps FuseOps from fusing our kernels away.
OP_PATTERN_ATTR = "op_pattern"
OP_PATTERN_OPAQUE = 8


class LutKind:
    """Values of LUT_KIND_ATTR."""

    ENCODE_DENSE = "encode_dense"
    ENCODE_CONV2D = "encode_conv2d"
    LOOKUP_DENSE = "lookup_dense"
    LOOKUP_CONV2D = "lookup_conv2d"
    LOOKUP_DENSE_SHUFFLE = "lookup_dense_shuffle"
    ENCODE_DENSE_ROWS = "encode_dense_rows"
    EXACT_LUT_DENSE = "exact_lut_dense"
    EXACT_LUT_SHUFFLE = "exact_lut_shuffle"
    ENCODE_CONV2D_ROWS = "encode_conv2d_rows"
    LOOKUP_CONV2D_SHUFFLE = "lookup_conv2d_shuffle"
    ALL = (ENCODE_DENSE, ENCODE_CONV2D, LOOKUP_DENSE, LOOKUP_CONV2D, LOOKUP_DENSE_SHUFFLE,
           ENCODE_DENSE_ROWS, EXACT_LUT_DENSE, ENCODE_CONV2D_ROWS, LOOKUP_CONV2D_SHUFFLE, EXACT_LUT_SHUFFLE)
