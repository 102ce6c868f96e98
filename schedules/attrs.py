"""Attribute keys that tag lut_tvm's own PrimFuncs, defined once."""

# Function attribute naming which LUT primitive a PrimFunc computes (a value of LutKind).
LUT_KIND_ATTR = "lut_tvm.kind"
# Further attributes of our kernels, by the keyword the builders pass them as (``tag_kernel``).
RELU_ATTR = "lut_tvm.relu"  # 1 where a following ReLU is fused into the kernel
EPILOGUE_ATTR = "lut_tvm.epilogue"  # 0 for a lookup that returns its int accumulator
OUT_WIDTH_ATTR = "lut_tvm.out_width"  # conv row encode: output width OW
INPUT_LAYOUT_ATTR = "lut_tvm.input_layout"  # conv row encode: "padded" (window copy) or "nchw"
BITS_ATTR = "lut_tvm.bits"  # exact LUT: weight bit width
FLOAT_IO_ATTR = "lut_tvm.float_io"  # exact LUT: 1 for float input/output with in-kernel quantization
INPUT_ATTR = "lut_tvm.input"  # exact LUT: the input's form (rows or conv2d windows)
WORD_ATTR = "lut_tvm.word"  # exact shuffle: 1 where tables are looked up as int16 words
ACT_BITS_ATTR = "lut_tvm.act_bits"  # int8 dense: activation width (8: 0..255, 7: 0..127)
KERNEL_ATTRS = {"relu": RELU_ATTR, "epilogue": EPILOGUE_ATTR, "out_width": OUT_WIDTH_ATTR,
                "input_layout": INPUT_LAYOUT_ATTR, "bits": BITS_ATTR, "float_io": FLOAT_IO_ATTR,
                "input": INPUT_ATTR, "word": WORD_ATTR, "act_bits": ACT_BITS_ATTR}
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
    EXACT_TMAC = "exact_tmac"
    INT8_QUANTIZE_ROWS = "int8_quantize_rows"  # not a LUT: the int8 dense layer's two kernels
    INT8_DENSE = "int8_dense"
    ENCODE_DENSE_ROWS_INT8 = "encode_dense_rows_int8"  # the row encode on int8 distances
    ALL = (ENCODE_DENSE, ENCODE_CONV2D, LOOKUP_DENSE, LOOKUP_CONV2D, LOOKUP_DENSE_SHUFFLE,
           ENCODE_DENSE_ROWS, EXACT_LUT_DENSE, ENCODE_CONV2D_ROWS, LOOKUP_CONV2D_SHUFFLE, EXACT_LUT_SHUFFLE,
           EXACT_TMAC, INT8_QUANTIZE_ROWS, INT8_DENSE, ENCODE_DENSE_ROWS_INT8)


def tag_kernel(func, kind: str, **attrs):
    """``func`` tagged with its LutKind and the ``KERNEL_ATTRS`` named by keyword, kept unfused
    (opaque) by Relax; an unknown keyword is a builder bug (KeyError)."""
    func = func.with_attr(LUT_KIND_ATTR, kind).with_attr(OP_PATTERN_ATTR, OP_PATTERN_OPAQUE)
    for key, value in attrs.items():
        func = func.with_attr(KERNEL_ATTRS[key], value)
    return func
