"""The zoo profile sorts TVM functions into op kinds and reports both sides' totals and slowest entries."""

from benchmarks.speed.zoo_profile import by_kind, model_report, tvm_kind


def test_function_names_map_to_op_kinds():
    assert tvm_kind("fused_conv2d2_add4_relu4") == "conv (direct)"
    assert tvm_kind("fused_matmul12_strided_slice8").startswith("matmul")
    assert tvm_kind("fused_reshape3_add2_relu2_concatenate") == "layout glue"
    assert tvm_kind("max_pool2d1") == "pool"
    assert tvm_kind("vm.builtin.alloc_tensor") == "VM builtins"
    assert tvm_kind("softmax") == "other"


def test_report_sums_kinds_and_ratio():
    tvm = {"fused_conv2d_add_relu": 3.0, "fused_matmul1": 1.0, "max_pool2d": 0.5}
    ort = {"r1_nchwc": ("Conv", 2.0), "r2": ("MaxPool", 0.5)}
    assert by_kind(tvm, tvm_kind) == {"conv (direct)": 3.0, "matmul (1x1 conv, im2col stem, Gemm)": 1.0, "pool": 0.5}
    text = "\n".join(model_report("m", tvm, ort, top=2))
    assert "TVM dense 4.50 ms, ONNX Runtime fp32 2.50 ms" in text and "ratio 0.56" in text
    assert "`fused_conv2d_add_relu` | 3.000" in text and "Conv `r1_nchwc` | 2.000" in text
    assert "`max_pool2d`" not in text.split("slowest TVM")[1]  # only the top 2 listed
