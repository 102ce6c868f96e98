"""FastMath: GELU/softmax/exp/erf/tanh in vectorizable forms, equal to the exact math within a few ulp."""

import math

import numpy as np
import pytest
import torch
import tvm
from tvm import relax, tirx, topi

import lut_tvm
from lut_tvm import _tvm_compat
from lut_tvm.compiler import build_relax
from lut_tvm.targets import resolve_target
from lut_tvm.testing import op_calls, relax_module
from relay_passes.fast_math import FastMath

RNG = np.random.default_rng(5)
X = (RNG.standard_normal((7, 33)) * 3).astype(np.float32)
ERF = np.vectorize(math.erf, otypes=[np.float64])


def _softmax(x):
    shifted = np.exp(x - x.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


# op builder, NumPy reference (float64)
CASES = {
    "gelu": (relax.op.nn.gelu, lambda x: x * (0.5 + 0.5 * ERF(x / math.sqrt(2.0)))),
    "gelu_tanh": (relax.op.nn.gelu_tanh,
                  lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    "softmax": (lambda x: relax.op.nn.softmax(x, axis=-1), _softmax),
    "exp": (relax.op.exp, np.exp),
    "erf": (relax.op.erf, ERF),
    "tanh": (relax.op.tanh, np.tanh),
}
LIBM_CALLS = {"gelu": "erff", "erf": "erff", "exp": "expf", "tanh": "tanhf", "softmax": "expf"}


def _module(name):
    build, _ = CASES[name]
    return relax_module(X.shape, lambda bb, x: build(x))


def _run(executable):
    vm = _tvm_compat.virtual_machine(executable)
    return vm["main"](_tvm_compat.to_device(X)).numpy()


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_forms_match_the_exact_math(name):
    mod = _module(name)
    rewritten = FastMath()(mod)
    op_name = {"gelu": "relax.nn.gelu", "gelu_tanh": "relax.nn.gelu_tanh",
               "softmax": "relax.nn.softmax", "exp": "relax.exp", "erf": "relax.erf",
               "tanh": "relax.tanh"}[name]
    assert op_calls(mod, op_name) and not op_calls(rewritten, op_name)
    target = resolve_target("x86-avx512" if "avx512f" in lut_tvm.targets.host_cpu_flags() else "native")
    got = _run(build_relax(mod, target, fast_math=True))
    want = CASES[name][1](X.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    slow = _run(build_relax(mod, target, fast_math=False))
    np.testing.assert_allclose(slow, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", ["gelu", "exp", "softmax"])
def test_fast_forms_leave_no_libm_call(name):
    """The point of the pass: the exact forms call libm per element, the fast ones do not."""
    mod = _module(name)
    target = resolve_target("native")
    fast = _tvm_compat.executable_assembly(build_relax(mod, target, fast_math=True))
    slow = _tvm_compat.executable_assembly(build_relax(mod, target, fast_math=False))
    libm = LIBM_CALLS[name]
    assert libm in slow
    assert libm not in fast


def test_compile_applies_fast_math_by_default_and_keeps_the_model(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(33, 40), torch.nn.GELU(), torch.nn.Linear(40, 9),
                                torch.nn.Softmax(-1)).eval()
    want = model(torch.from_numpy(X)).detach().numpy()
    fast = lut_tvm.compile(model, None, example_inputs=(X,))
    exact = lut_tvm.compile(model, None, example_inputs=(X,), fast_math=False)
    assert fast.info.fast_math and not exact.info.fast_math
    np.testing.assert_allclose(fast(X), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(exact(X), want, rtol=1e-4, atol=1e-6)
    fast.export(tmp_path / "fast.so")
    exact.export(tmp_path / "exact.so")
    assert lut_tvm.load(tmp_path / "fast.so").info.fast_math  # the description says which math ran
    assert not lut_tvm.load(tmp_path / "exact.so").info.fast_math


def _fast_gelu_erf(x):
    half = tirx.const(0.5, "float32")
    return x * (half + topi.fast_erf(x * tirx.const(0.5 ** 0.5, "float32")) * half)


def _fast_gelu_tanh(x):
    inner = tirx.const(math.sqrt(2.0 / math.pi), "float32") * x * (
        tirx.const(1.0, "float32") + tirx.const(0.044715, "float32") * x * x)
    return tirx.const(0.5, "float32") * x * (tirx.const(1.0, "float32") + topi.fast_tanh(inner))


@pytest.mark.parametrize("name, formula", [("gelu", _fast_gelu_erf), ("gelu_tanh", _fast_gelu_tanh)])
def test_gelu_before_expected(name, formula):
    """float32 GELU becomes a ``call_te`` of its formula with the fast erf/tanh, named after it."""
    before = _module(name)
    expected = relax_module(X.shape, lambda bb, x: bb.call_te(formula, x, primfunc_name_hint=name))
    tvm.ir.assert_structural_equal(FastMath()(before), expected)


def test_float16_gelu_and_plain_ops_left_alone():
    """float16 GELU keeps TVM's legalization; an op without a fast form is not touched."""
    for op, dtype in ((relax.op.nn.gelu, "float16"), (relax.op.nn.relu, "float32")):
        before = relax_module(X.shape, lambda bb, x, op=op: bb.emit(op(x)), dtype=dtype)
        tvm.ir.assert_structural_equal(FastMath()(before), before)
