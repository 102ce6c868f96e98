"""FuseLUTEpilogue: bias adds and ReLUs after a LUT lookup fold into it, only when that is exact."""

import numpy as np
import pytest
import tvm
from tvm import relax

from lut_tvm import reference as ref
from lut_tvm.plan import LayerPlan, Plan
from lut_tvm.targets import host_cpu_flags
from lut_tvm.weights import LayerKind, fingerprint
from lut_tvm.testing import assert_no_near_ties, relax_module as make_module, run_relax as run, op_calls
from relay_passes.fuse_lut_epilogue import FuseLUTEpilogue
from relay_passes.rewrite_conv2d_to_lut import RewriteConv2dToLUT
from relay_passes.rewrite_dense_to_lut import RewriteDenseToLUT
from schedules.lut_compute import Conv2dGeometry

from expected_kernels import emit_lut_conv2d, emit_lut_dense


def lookups(mod):
    """``(relu flag, bias vector)`` of every LUT lookup call in main."""
    found = []
    for call in op_calls(mod, "relax.call_tir"):
        func = mod[call.args[0]]
        kind = str(func.attrs["lut_tvm.kind"]) if func.attrs and "lut_tvm.kind" in func.attrs else ""
        if kind.startswith("lookup"):
            found.append((int(func.attrs["lut_tvm.relu"]), call.args[1].fields[3].value.numpy()))
    return found


RNG = np.random.default_rng(11)
W = RNG.standard_normal((12, 8)).astype(np.float32)
B = RNG.standard_normal(8).astype(np.float32)
B2 = RNG.standard_normal(8).astype(np.float32)
WC = RNG.standard_normal((6, 2, 3, 3)).astype(np.float32)
BC = RNG.standard_normal(6).astype(np.float32)
M = 5


def dense_plan():
    centroids = np.random.default_rng(1).standard_normal((4, 16, 3)).astype(np.float32)
    return Plan([LayerPlan("fc", LayerKind.DENSE, W.shape, fingerprint(W), centroids)])


def conv_plan():
    centroids = np.random.default_rng(2).standard_normal((6, 16, 3)).astype(np.float32)
    return Plan([LayerPlan("conv", LayerKind.CONV2D, WC.shape, fingerprint(WC), centroids)])


def lut_dense(bb, x):
    return bb.emit(relax.op.matmul(x, relax.const(W)))


def dense_input(seed=3):
    x = np.random.default_rng(seed).standard_normal((M, 12)).astype(np.float32)
    assert_no_near_ties(x, dense_plan().layers[0].centroids)
    return x


def dense_lut(x, bias=None):
    return ref.lut_matmul(x, dense_plan().layers[0].centroids, W, bias)


def rewrite_dense(mod):
    return RewriteDenseToLUT(dense_plan())(mod)


def test_relu_of_bias_add_fuses_into_one_lookup():
    mod = make_module((M, 12), lambda bb, x: bb.emit(relax.op.nn.relu(
        bb.emit(relax.op.add(lut_dense(bb, x), relax.const(B))))))
    fused = FuseLUTEpilogue()(rewrite_dense(mod))
    assert not op_calls(fused, "relax.add") and not op_calls(fused, "relax.nn.relu")
    found = lookups(fused)
    assert len(found) == 1 and found[0][0] == 1
    np.testing.assert_array_equal(found[0][1], B)
    x = dense_input()
    want = np.maximum(dense_lut(x, B), 0)
    assert (want == 0).any() and (want > 0).any()
    np.testing.assert_allclose(run(fused, x), want, rtol=1e-5, atol=1e-5)


def test_bias_on_the_left_fuses_without_relu():
    mod = make_module((M, 12), lambda bb, x: bb.emit(relax.op.add(relax.const(B), lut_dense(bb, x))))
    fused = FuseLUTEpilogue()(rewrite_dense(mod))
    assert not op_calls(fused, "relax.add")
    found = lookups(fused)
    assert len(found) == 1 and found[0][0] == 0
    np.testing.assert_array_equal(found[0][1], B)
    x = dense_input()
    np.testing.assert_allclose(run(fused, x), dense_lut(x, B), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias_shape", [(1, 8), (1,), ()], ids=["row", "scalar1", "scalar0"])
def test_broadcast_bias_shapes(bias_shape):
    bias = np.full(bias_shape, 0.75, np.float32) if bias_shape in [(1,), ()] else B.reshape(bias_shape)
    mod = make_module((M, 12), lambda bb, x: bb.emit(relax.op.add(lut_dense(bb, x), relax.const(bias))))
    fused = FuseLUTEpilogue()(rewrite_dense(mod))
    assert not op_calls(fused, "relax.add")
    found = lookups(fused)
    assert len(found) == 1
    np.testing.assert_array_equal(found[0][1], np.broadcast_to(bias, (1, 8)).reshape(8))


def test_two_bias_adds_then_relu_sum_into_one_lookup():
    def body(bb, x):
        first = bb.emit(relax.op.add(lut_dense(bb, x), relax.const(B)))
        second = bb.emit(relax.op.add(relax.const(B2), first))
        return bb.emit(relax.op.nn.relu(second))

    fused = FuseLUTEpilogue()(rewrite_dense(make_module((M, 12), body)))
    assert not op_calls(fused, "relax.add") and not op_calls(fused, "relax.nn.relu")
    found = lookups(fused)
    assert len(found) == 1 and found[0][0] == 1
    np.testing.assert_allclose(found[0][1], B + B2, rtol=0, atol=0)
    x = dense_input()
    want = np.maximum(dense_lut(x, B + B2), 0)
    np.testing.assert_allclose(run(fused, x), want, rtol=1e-5, atol=1e-5)


def test_add_after_relu_is_not_folded_into_the_relu_kernel():
    """relu(lookup) fuses; a later bias add must stay outside (relu(y) + b != relu(y + b))."""
    def body(bb, x):
        return bb.emit(relax.op.add(bb.emit(relax.op.nn.relu(lut_dense(bb, x))), relax.const(B)))

    fused = FuseLUTEpilogue()(rewrite_dense(make_module((M, 12), body)))
    assert len(op_calls(fused, "relax.add")) == 1 and not op_calls(fused, "relax.nn.relu")
    found = lookups(fused)
    assert len(found) == 1 and found[0][0] == 1 and not found[0][1].any()
    x = dense_input()
    want = np.maximum(dense_lut(x), 0) + B
    np.testing.assert_allclose(run(fused, x), want, rtol=1e-5, atol=1e-5)


def test_lookup_with_two_uses_is_not_fused():
    def body(bb, x):
        y = lut_dense(bb, x)
        biased = bb.emit(relax.op.add(y, relax.const(B)))
        return bb.emit(relax.op.multiply(biased, y))

    fused = FuseLUTEpilogue()(rewrite_dense(make_module((M, 12), body)))
    assert len(op_calls(fused, "relax.add")) == 1
    found = lookups(fused)
    assert len(found) == 1 and found[0][0] == 0 and not found[0][1].any()
    x = dense_input()
    lut = dense_lut(x)
    np.testing.assert_allclose(run(fused, x), (lut + B) * lut, rtol=1e-5, atol=1e-5)


def test_relu_of_shared_lookup_is_not_fused():
    def body(bb, x):
        y = lut_dense(bb, x)
        return bb.emit(relax.op.subtract(bb.emit(relax.op.nn.relu(y)), y))

    fused = FuseLUTEpilogue()(rewrite_dense(make_module((M, 12), body)))
    assert len(op_calls(fused, "relax.nn.relu")) == 1
    assert [relu for relu, _ in lookups(fused)] == [0]


def test_bias_varying_along_rows_is_not_fused():
    bias = RNG.standard_normal((M, 1)).astype(np.float32)
    mod = make_module((M, 12), lambda bb, x: bb.emit(relax.op.nn.relu(
        bb.emit(relax.op.add(lut_dense(bb, x), relax.const(bias))))))
    fused = FuseLUTEpilogue()(rewrite_dense(mod))
    assert len(op_calls(fused, "relax.add")) == 1 and len(op_calls(fused, "relax.nn.relu")) == 1
    found = lookups(fused)
    assert len(found) == 1 and found[0][0] == 0 and not found[0][1].any()
    x = dense_input()
    np.testing.assert_allclose(run(fused, x), np.maximum(dense_lut(x) + bias, 0), rtol=1e-5, atol=1e-5)


def test_non_constant_addend_is_not_fused():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((M, 12), "float32"))
    b = relax.Var("b", relax.TensorType((8,), "float32"))
    with bb.function("main", [x, b]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.add(lut_dense(bb, x), b)))
        bb.emit_func_output(out)
    fused = FuseLUTEpilogue()(rewrite_dense(bb.get()))
    assert len(op_calls(fused, "relax.add")) == 1
    assert [relu for relu, _ in lookups(fused)] == [0]


# --- conv2d --------------------------------------------------------------------------------------

CONV_IN = (1, 2, 9, 9)
CONV_GEOMETRY = dict(strides=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2))


def lut_conv(bb, x):
    return bb.emit(relax.op.nn.conv2d(x, relax.const(WC), **CONV_GEOMETRY))


def conv_input():
    x = np.random.default_rng(4).standard_normal(CONV_IN).astype(np.float32)
    rows, _ = ref.im2col_nchw(x, (3, 3), **CONV_GEOMETRY)
    assert_no_near_ties(rows, conv_plan().layers[0].centroids)
    return x


def conv_reference(x, bias=None):
    return ref.lut_conv2d(x, conv_plan().layers[0].centroids, WC, bias, **CONV_GEOMETRY)


def test_conv_relu_of_channel_bias_fuses():
    bias = BC.reshape(1, 6, 1, 1)
    mod = make_module(CONV_IN, lambda bb, x: bb.emit(relax.op.nn.relu(
        bb.emit(relax.op.add(lut_conv(bb, x), relax.const(bias))))))
    fused = FuseLUTEpilogue()(RewriteConv2dToLUT(conv_plan())(mod))
    assert not op_calls(fused, "relax.add") and not op_calls(fused, "relax.nn.relu")
    assert not op_calls(fused, "relax.nn.conv2d")
    found = lookups(fused)
    assert len(found) == 1 and found[0][0] == 1
    np.testing.assert_array_equal(found[0][1], BC)
    x = conv_input()
    want = np.maximum(conv_reference(x, BC), 0)
    assert (want == 0).any() and (want > 0).any()
    np.testing.assert_allclose(run(fused, x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias_shape", [(1, 1, 5, 1), (6,)], ids=["along_height", "along_width"])
def test_conv_bias_along_spatial_axis_is_not_fused(bias_shape):
    """(1, 1, OH, 1) varies along height; a bare (6,) broadcasts along width (OW = 6), not channels."""
    x = conv_input()
    out_shape = conv_reference(x).shape
    assert out_shape == (1, 6, 5, 6)
    bias = RNG.standard_normal(bias_shape).astype(np.float32)
    mod = make_module(CONV_IN, lambda bb, v: bb.emit(relax.op.add(lut_conv(bb, v), relax.const(bias))))
    fused = FuseLUTEpilogue()(RewriteConv2dToLUT(conv_plan())(mod))
    assert len(op_calls(fused, "relax.add")) == 1
    found = lookups(fused)
    assert len(found) == 1 and not found[0][1].any()
    np.testing.assert_allclose(run(fused, x), conv_reference(x) + bias, rtol=1e-5, atol=1e-5)


AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})


@pytest.mark.skipif("avx512bw" not in host_cpu_flags(), reason="CPU has no AVX-512BW")
def test_bias_and_relu_fuse_into_the_shuffle_lookup():
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((32, 16)).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    centroids = rng.standard_normal((8, 16, 4)).astype(np.float32)
    plan = Plan([LayerPlan("fc", LayerKind.DENSE, weight.shape, fingerprint(weight), centroids)])

    def body(bb, x):
        out = bb.emit(relax.op.matmul(x, relax.const(weight)))
        return bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(out, relax.const(bias)))))

    with AVX512:
        fused = FuseLUTEpilogue()(RewriteDenseToLUT(plan)(make_module((128, 32), body)))
    calls = [c for c in op_calls(fused, "relax.call_tir")
             if str(fused[c.args[0]].attrs.get("lut_tvm.kind", "")) == "lookup_dense_shuffle"]
    assert len(calls) == 1 and int(fused[calls[0].args[0]].attrs["lut_tvm.relu"]) == 1
    assert not op_calls(fused, "relax.add") and not op_calls(fused, "relax.nn.relu")
    x = rng.standard_normal((128, 32)).astype(np.float32)
    vm = relax.VirtualMachine(tvm.compile(fused, AVX512), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    expected = np.maximum(ref.lut_matmul(x, centroids, weight, bias), 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif("avx512bw" not in host_cpu_flags(), reason="CPU has no AVX-512BW")
def test_channel_bias_and_relu_fuse_into_the_conv_shuffle_lookup():
    """The conv shuffle lookup writes NCHW: a (1, O, 1, 1) bias and a ReLU fold into it."""
    rng = np.random.default_rng(6)
    weight = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    centroids = rng.standard_normal((3, 16, 9)).astype(np.float32)
    plan = Plan([LayerPlan("conv", LayerKind.CONV2D, weight.shape, fingerprint(weight), centroids)])
    geometry = dict(strides=(1, 1), padding=(1, 1, 1, 1))

    def body(bb, x):
        out = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), **geometry))
        return bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(out, relax.const(bias.reshape(1, 16, 1, 1))))))

    with AVX512:
        fused = FuseLUTEpilogue()(RewriteConv2dToLUT(plan)(make_module((2, 3, 9, 7), body)))
    kinds = {str(fused[c.args[0]].attrs.get("lut_tvm.kind", "")): c for c in op_calls(fused, "relax.call_tir")}
    assert "lookup_conv2d_shuffle" in kinds
    assert int(fused[kinds["lookup_conv2d_shuffle"].args[0]].attrs["lut_tvm.relu"]) == 1
    assert not op_calls(fused, "relax.add") and not op_calls(fused, "relax.nn.relu")
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    rows, _ = ref.im2col_nchw(x, (3, 3), **geometry)
    assert_no_near_ties(rows, centroids)
    vm = relax.VirtualMachine(tvm.compile(fused, AVX512), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    want = np.maximum(ref.lut_conv2d(x, centroids, weight, bias, **geometry), 0)
    assert (want == 0).any() and (want > 0).any()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_dense_before_expected():
    """``relu(lookup + b)`` becomes one ReLU lookup with bias ``b``; the encode is untouched."""
    before = rewrite_dense(make_module((M, 12), lambda bb, x: bb.emit(relax.op.nn.relu(
        bb.emit(relax.op.add(lut_dense(bb, x), relax.const(B)))))))
    layer = dense_plan().layers[0]
    expected = make_module((M, 12), lambda bb, x: emit_lut_dense(bb, x, layer, W, M, bias=B, relu=True))
    tvm.ir.assert_structural_equal(FuseLUTEpilogue()(before), expected)


def test_conv_before_expected():
    """A channel bias ``[1, O, 1, 1]`` (left operand) folds into the conv lookup; no ReLU follows."""
    bias = BC.reshape(1, 6, 1, 1)
    before = RewriteConv2dToLUT(conv_plan())(make_module(CONV_IN, lambda bb, x: bb.emit(
        relax.op.add(relax.const(bias), lut_conv(bb, x)))))
    geometry = Conv2dGeometry(kernel=(3, 3), **CONV_GEOMETRY)
    expected = make_module(CONV_IN, lambda bb, x: emit_lut_conv2d(
        bb, x, conv_plan().layers[0], WC, (CONV_IN, geometry), bias=BC))
    tvm.ir.assert_structural_equal(FuseLUTEpilogue()(before), expected)
