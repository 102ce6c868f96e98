"""On the emulated ARM64 device: the exact T-MAC kernel's NEON form (``tbl`` on register-held byte
tables, 16 columns per look-up, ``schedules.intrin.tmac``) equals the NumPy integer GEMM bit for
bit, for the cases the x86 forms are tested with (``tests/schedules/test_tmac.py``: 1-8 bits and
ternary, M = 1, 3, 128, odd K and N, the int16 worst case, the float epilogue on conv2d windows);
and a small CNN compiled for ``arm64`` with an exact plan (the default look-up: T-MAC) equals the
quantized model's integer reference there.

All kernels are compiled into one library, uploaded and loaded once (qemu is slow to start a
module); the assembly check (``tbl``) is on the same library.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from lut_tvm import _tvm_compat
from lut_tvm.exact import reference as ref
from lut_tvm.exact.reference.tmac import pack_tmac
from lut_tvm.reference import im2col_nchw
from lut_tvm.targets import TARGETS
from lut_tvm.testing import random_low_bit_weights
from schedules.lut_compute import Conv2dGeometry
from schedules.rules.tmac import TmacRule
from schedules.tmac_compute import tmac_func

LANES = 16  # NEON tbl
BITS = [1, 2, 3, 4, 8, "ternary"]
SHAPES = [(1, 45, 33), (3, 37, 70), (128, 29, 65)]
GEOMETRY = Conv2dGeometry(kernel=(3, 3), strides=(1, 2), padding=(1, 1, 1, 1), dilation=(1, 1))


def _gemm_case(bits, rows, depth, cols):
    """``(x, wq, plan bits, geometry, out_scale, bias, relu, want)`` of one GEMM case (as on x86)."""
    rng = np.random.default_rng(depth * cols + rows)
    wq, stored = random_low_bit_weights(rng, bits, (depth, cols))
    xq = rng.integers(-127, 128, (rows, depth)).astype(np.float32)
    return xq, wq, stored, None, None, None, False, ref.int_gemm(xq.astype(np.int8), wq)


def _worst_case():
    """All activations 127 and all weights -8 (4 bits): every look-up -508; 65 groups, two chunks."""
    xq = np.full((2, 260), 127, np.float32)
    wq = np.full((260, 40), -8, np.int8)
    return xq, wq, 4, None, None, None, False, ref.int_gemm(xq.astype(np.int8), wq)


def _conv_case():
    """Quantized float NCHW input, bias and ReLU on conv2d windows."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32) * 3
    wq, _ = random_low_bit_weights(rng, 3, (27, 19))
    rows = im2col_nchw(x, GEOMETRY.kernel, GEOMETRY.strides, GEOMETRY.padding, GEOMETRY.dilation)[0]
    scale = (rng.random(19) + 0.5).astype(np.float32)
    bias = rng.integers(-300, 300, 19).astype(np.int32)
    want = ref.dequantize(ref.int_gemm(ref.quantize_activations(rows, 1.0), wq), scale, bias, relu=True)
    return x, wq, 3, GEOMETRY, scale, bias, True, want


CASES = {f"b{bits}_{rows}x{depth}x{cols}": (_gemm_case, (bits, rows, depth, cols))
         for bits in BITS for rows, depth, cols in SHAPES}
CASES["worst_int16"] = (_worst_case, ())
CASES["conv_epilogue"] = (_conv_case, ())


def _kernel(case):
    """``(scheduled PrimFunc, inputs, want)`` of one case, packed for 16 lanes."""
    x, wq, bits, geometry, scale, bias, relu, want = case
    cols = wq.shape[1]
    packed = pack_tmac(wq, bits, LANES)
    func = tmac_func(x.shape, geometry, bits, packed.padded_groups, cols, LANES, 1.0, relu)
    sch = TmacRule().apply(func, tvm.target.Target(TARGETS["arm64"]), False)
    assert sch is not None, "the T-MAC rule must schedule its kernel for arm64"
    scale = np.ones(cols, np.float32) if scale is None else scale
    bias = np.zeros(cols, np.int32) if bias is None else bias
    return sch.mod["main"], [x, packed.nibbles, scale, bias], want


@pytest.fixture(scope="module")
def tmac_library(arm64_device, cross_linker, tmp_path_factory):
    """``(remote module, {case: (inputs, want)}, assembly)``: every case's kernel in one library."""
    from lut_tvm.deploy.linker import plan_export

    del cross_linker
    target = tvm.target.Target(TARGETS["arm64"])
    funcs, data = {}, {}
    for name, (make, args) in CASES.items():
        func, inputs, want = _kernel(make(*args))
        funcs[name] = func.with_attr("global_symbol", name)
        data[name] = (inputs, want)
    exe = tvm.compile(tvm.IRModule(funcs), target)
    lib = tmp_path_factory.mktemp("tmac_arm64") / "tmac_kernels.so"
    exe.export_library(str(lib), fcompile=plan_export(target).linker.fcompile())
    with arm64_device.connect() as session:
        module = session.load_module(session.upload(lib))
        yield session, module, data, exe.mod.inspect_source("asm")


def test_library_uses_tbl_and_zip(tmac_library):
    asm = [line.split() for line in tmac_library[3].splitlines()]
    tbl = [line for line in asm if line[:1] == ["tbl"]]
    assert tbl and all(line[1].endswith(".16b,") for line in tbl)
    assert any(line[:1] == ["zip1"] for line in asm) and any(line[:1] == ["zip2"] for line in asm)


@pytest.mark.parametrize("name", list(CASES))
def test_neon_tmac_kernel_on_device_equals_int_gemm(tmac_library, name):
    session, module, data, _ = tmac_library
    inputs, want = data[name]
    device = session.device
    args = [_tvm_compat.to_device(np.ascontiguousarray(a), device) for a in inputs]
    out = _tvm_compat.to_device(np.zeros(want.shape, np.float32), device)
    session.step(f"run {name}", lambda: module[name](*args, out))
    np.testing.assert_array_equal(out.numpy(), want)


def test_exact_cnn_for_arm64_on_device_equals_quantized_reference(arm64_device, cross_linker, tmp_path):
    """A small CNN with an exact plan (4-, 2- and 1-bit layers) compiled for ``arm64``: every planned
    layer is the T-MAC kernel (the default look-up there), its assembly has ``tbl``, and the device's
    output equals the quantized model's integer reference (``QuantizedTorchModel``) bit for bit."""
    import torch
    from torch import nn

    import lut_tvm
    from lut_tvm.exact.quantize import QuantizedTorchModel, predict, quantize_model

    del cross_linker
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 5, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(5, 7, 3, stride=2, padding=1, bias=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(7 * 4 * 4, 10)).eval()
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    x = rng.standard_normal((13, 1, 8, 8)).astype(np.float32)  # 13: no multiple of a vector width
    plan = quantize_model(model, calibration, {"0": 4, "2": 2, "5": 1})
    compiled = lut_tvm.compile(model, plan, target="arm64", example_inputs=(x,), tuning_logs=False,
                               dump_ir=tmp_path)
    assert compiled.info.lut_layers == ["0", "2", "5"]
    assert (tmp_path / "02_lut_rewrite.py").read_text().count('"lut_tvm.kind": "exact_tmac"') == 3
    asm = _tvm_compat.executable_assembly(compiled.executable)
    assert any(line.split()[:1] == ["tbl"] for line in asm.splitlines())
    remote = compiled.deploy(arm64_device.address)
    try:
        got = remote(x)
    finally:
        remote.session.close()
    np.testing.assert_array_equal(got, predict(QuantizedTorchModel(model, plan), x))
