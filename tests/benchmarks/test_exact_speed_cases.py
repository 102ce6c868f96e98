"""The speed benchmark's exact (LUT-NA) cases: a tiny layer prepared in every look-up form the host
runs gives libraries whose outputs equal an independent NumPy integer reference bit for bit."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the speed benchmark's peers need onnxruntime")

import lut_tvm  # noqa: E402
from benchmarks.speed.exact import BITS, chosen_intrinsic, exact_forms, prepare_exact_kernel  # noqa: E402
from benchmarks.speed.shapes import KernelCase  # noqa: E402
from benchmarks.speed.worker import exactness  # noqa: E402
from lut_tvm.exact import ExactPlan  # noqa: E402
from lut_tvm.exact.conv_reference import dequantize_nchw, int_conv2d  # noqa: E402
from lut_tvm.torch_layers import module_weight  # noqa: E402
from lut_tvm.exact.reference import (dequantize, int_gemm, output_scale, quantize_activations,  # noqa: E402
                                     quantize_bias)
from lut_tvm.targets import host_cpu_flags  # noqa: E402

FORMS = exact_forms(host_cpu_flags())
TINY = [KernelCase("tiny", "dense", 8, 40, 24),  # D not a multiple of 4, N not of the 64-column block
        KernelCase("tiny", "conv", 1, 3, 8, 3, 1, 1, 6)]


def numpy_reference(case: KernelCase, plan: ExactPlan, x: np.ndarray) -> np.ndarray:
    """``float32(int GEMM + bias_q) * out_scale`` from ``lut_tvm.exact.reference`` alone (no torch model)."""
    model = case.build()
    layer = plan.layers[0]
    wq = layer.quantized_weight(module_weight(model.layer))  # [D, N]
    scale = output_scale(layer.act_scale, layer.w_scale)
    bias_q = quantize_bias(model.layer.bias.detach().numpy(), scale)
    xq = quantize_activations(x, layer.act_scale)
    if not case.is_conv:
        return dequantize(int_gemm(xq, wq), scale, bias_q)
    oihw = wq.T.reshape(case.out_ch, case.in_ch, case.kernel, case.kernel)
    return dequantize_nchw(int_conv2d(xq, oihw, case.stride, case.padding), scale, bias_q)


@pytest.mark.parametrize("case", TINY, ids=lambda c: c.name)
def test_prepared_exact_libraries_are_bit_exact(case, tmp_path):
    meta = prepare_exact_kernel(case, tmp_path, bits=(3,), forms=FORMS)
    assert not meta["failed"], meta["failed"]
    assert sorted(meta["lut_variants"]) == sorted(f"{form.key} b=3" for form in FORMS)
    x = np.load(tmp_path / "input.npy")
    for label, variant in meta["lut_variants"].items():
        plan = ExactPlan.load(tmp_path / variant["library"].replace("lut_", "plan_").replace(".so", ".npz"))
        want = numpy_reference(case, plan, x)
        expected = np.load(tmp_path / variant["expected"])
        np.testing.assert_array_equal(expected, want, err_msg=f"{label}: stored reference")
        got = np.asarray(lut_tvm.load(tmp_path / variant["library"])(x))
        np.testing.assert_array_equal(got, want, err_msg=f"{label}: compiled library")
        assert variant["lut_layers"] == 1 and variant["bits"] == {"layer": 3}
        assert (variant["intrinsic"] == "gather") == (variant["form"] == "gather")


def test_forms_select_their_intrinsic():
    intrinsics = {form.key: chosen_intrinsic(form.target, form.key) for form in FORMS}
    assert intrinsics["gather"] == "gather"
    if "avx2" in host_cpu_flags():
        assert intrinsics["tmac"].startswith("tmac")
    if "avx512bw" in host_cpu_flags():
        assert "permw" in intrinsics["word"] and "avx2" in intrinsics["shuffle"]
    assert BITS == (2, 4, 8)


def test_arm64_forms_include_the_neon_tmac_form():
    forms = {form.key: form for form in exact_forms({"asimd"})}
    assert list(forms) == ["tmac", "shuffle", "gather"]
    assert chosen_intrinsic(forms["tmac"].target, "tmac") == "tmac tbl"
    assert chosen_intrinsic(forms["shuffle"].target) == "lut_tvm_exact16_shuffle_neon"


def test_exactness_flags_a_one_ulp_difference():
    want = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    assert exactness(want.copy(), want) == {"bit_exact": True, "max_abs_diff": 0.0}
    off = want.copy()
    off[1, 2] = np.nextafter(off[1, 2], np.float32(10))
    check = exactness(off, want)
    assert not check["bit_exact"] and 0 < check["max_abs_diff"] < 1e-6
    assert not exactness(want[:2], want)["bit_exact"]


def test_report_marks_a_wrong_exact_output():
    from benchmarks.speed.exact_report import exact_lines  # pylint: disable=import-outside-toplevel

    info = KernelCase("tiny", "dense", 8, 40, 24).to_dict()
    variants = {f"{form} b=4": {"form": form, "bits": {"layer": 4}} for form in ("word", "gather")}
    case = {"key": "tiny", "kind": "exact", "exact_kind": "kernel", "name": "dense", "case": info,
            "lut_variants": variants}
    result = {"ms": {"lut word b=4": 1.0, "lut gather b=4": 4.0, "pytorch": 2.0},
              "exact_check": {"word b=4": {"bit_exact": True, "max_abs_diff": 0.0},
                              "gather b=4": {"bit_exact": False, "max_abs_diff": 0.5}}}
    text = "\n".join(exact_lines([case], {1: {"cases": {"tiny": result}}}))
    row = next(line for line in text.splitlines() if line.startswith("| tiny dense"))
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[3:5] == ["1000", "4000 **WRONG OUTPUT**"]  # word, gather (us)
    assert "word: 2.00x" in cells  # the fastest form vs PyTorch
    assert cells[-1] == "**NO**: gather b=4 (max abs diff 0.5)"
