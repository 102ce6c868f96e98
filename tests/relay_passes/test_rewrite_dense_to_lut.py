"""RewriteDenseToLUT on BlockBuilder-made Relax modules: structure, numerics, plan mismatches."""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.ir import Op

from lut_tvm import reference as ref
from lut_tvm.errors import PlanError
from lut_tvm.plan import LayerPlan, Plan
from lut_tvm.targets import host_cpu_flags
from lut_tvm.testing import assert_no_near_ties
from lut_tvm.weights import LayerKind, fingerprint
from relay_passes.rewrite_dense_to_lut import RewriteDenseToLUT

from expected_kernels import emit_lut_dense


def make_module(input_shape, body):
    """``main(x)`` whose dataflow block is ``body(bb, x)``."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(input_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def run(mod, *inputs):
    vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in inputs]).numpy()


def main_calls(mod):
    calls = []
    relax.analysis.post_order_visit(
        mod["main"].body, lambda e: calls.append(e) if isinstance(e, relax.Call) else None
    )
    return calls


def op_calls(mod, name):
    return [c for c in main_calls(mod) if isinstance(c.op, Op) and c.op.name == name]


def lut_calls(mod):
    """``(kind, call)`` of every call_tir in main to a PrimFunc tagged with ``lut_tvm.kind``."""
    found = []
    for call in op_calls(mod, "relax.call_tir"):
        func = mod[call.args[0]]
        if func.attrs is not None and "lut_tvm.kind" in func.attrs:
            found.append((str(func.attrs["lut_tvm.kind"]), call))
    return found


def constant_weights(calls):
    return [c.args[1].value.numpy() for c in calls if isinstance(c.args[1], tvm.ir.expr.Constant)]


def dense_plan_layer(name, weight, sub_len, num_centroids=16, seed=0):
    depth = weight.shape[0]
    centroids = np.random.default_rng(seed).standard_normal(
        (depth // sub_len, num_centroids, sub_len)).astype(np.float32)
    return LayerPlan(name, LayerKind.DENSE, weight.shape, fingerprint(weight), centroids)


RNG = np.random.default_rng(42)
W1 = RNG.standard_normal((12, 8)).astype(np.float32)
W2 = (RNG.standard_normal((8, 4)) * 0.5).astype(np.float32)


def two_layer(bb, x):
    hidden = bb.emit(relax.op.matmul(x, relax.const(W1)))
    return bb.emit(relax.op.matmul(hidden, relax.const(W2)))


def test_planned_matmul_replaced_unplanned_kept():
    mod = make_module((5, 12), two_layer)
    layer = dense_plan_layer("fc1", W1, sub_len=3)
    out = RewriteDenseToLUT(Plan([layer]))(mod)

    weights = constant_weights(op_calls(out, "relax.matmul"))
    assert len(weights) == 1 and np.array_equal(weights[0], W2)
    kinds = [kind for kind, _ in lut_calls(out)]
    assert sorted(kinds) == ["encode_dense", "lookup_dense"]
    encode = dict((k, c) for k, c in lut_calls(out))["encode_dense"]
    assert tuple(int(d) for d in encode.ty.shape.values) == (5, 4) and encode.ty.dtype == "uint8"

    x = np.random.default_rng(1).standard_normal((5, 12)).astype(np.float32)
    assert_no_near_ties(x, layer.centroids)
    want = ref.lut_matmul(x, layer.centroids, W1) @ W2
    np.testing.assert_allclose(run(out, x), want, rtol=1e-5, atol=1e-5)


def test_two_planned_layers_chain():
    mod = make_module((5, 12), two_layer)
    first = dense_plan_layer("fc1", W1, sub_len=4, seed=1)
    second = dense_plan_layer("fc2", W2, sub_len=2, num_centroids=8, seed=2)
    out = RewriteDenseToLUT(Plan([second, first]))(mod)
    assert not op_calls(out, "relax.matmul")
    assert sorted(k for k, _ in lut_calls(out)) == ["encode_dense"] * 2 + ["lookup_dense"] * 2

    x = np.random.default_rng(2).standard_normal((5, 12)).astype(np.float32)
    hidden = ref.lut_matmul(x, first.centroids, W1)
    assert_no_near_ties(x, first.centroids)
    assert_no_near_ties(hidden, second.centroids)
    want = ref.lut_matmul(hidden, second.centroids, W2)
    np.testing.assert_allclose(run(out, x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("input_shape", [(2, 3, 12), (2, 1, 3, 12)])
def test_higher_rank_input(input_shape):
    mod = make_module(input_shape, lambda bb, x: bb.emit(relax.op.matmul(x, relax.const(W1))))
    layer = dense_plan_layer("fc1", W1, sub_len=6, seed=3)
    out = RewriteDenseToLUT(Plan([layer]))(mod)
    assert not op_calls(out, "relax.matmul")
    assert sorted(k for k, _ in lut_calls(out)) == ["encode_dense", "lookup_dense"]
    assert tuple(int(d) for d in out["main"].ret_ty.shape.values) == (*input_shape[:-1], 8)

    x = np.random.default_rng(3).standard_normal(input_shape).astype(np.float32)
    rows = x.reshape(-1, 12)
    assert_no_near_ties(rows, layer.centroids)
    want = ref.lut_matmul(rows, layer.centroids, W1).reshape(*input_shape[:-1], 8)
    got = run(out, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_unplanned_module_is_unchanged():
    mod = make_module((5, 12), two_layer)
    other = np.ones((12, 8), np.float32)  # same shape, different values: another fingerprint
    plan = Plan([dense_plan_layer("elsewhere", other, sub_len=3)])
    tvm.ir.assert_structural_equal(RewriteDenseToLUT(plan)(mod), mod)
    tvm.ir.assert_structural_equal(RewriteDenseToLUT(Plan([]))(mod), mod)


def test_non_constant_weight_is_untouched():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((5, 12), "float32"))
    w = relax.Var("w", relax.TensorType((12, 8), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.matmul(x, w)))
        bb.emit_func_output(out)
    mod = bb.get()
    plan = Plan([dense_plan_layer("fc1", W1, sub_len=3)])
    tvm.ir.assert_structural_equal(RewriteDenseToLUT(plan)(mod), mod)


def _mismatched_plan():
    # Binds W1 by fingerprint, but claims a [6, 16] weight (C*V = 6 keeps the layer itself valid).
    centroids = np.zeros((2, 16, 3), np.float32)
    return Plan([LayerPlan("fc1", LayerKind.DENSE, (6, 16), fingerprint(W1), centroids)])


def test_weight_shape_mismatch_names_layer_and_field():
    mod = make_module((5, 12), two_layer)
    with pytest.raises(PlanError) as err:
        RewriteDenseToLUT(_mismatched_plan())(mod)
    message = str(err.value)
    assert "'fc1'" in message and "weight_shape" in message and "[12, 8]" in message


def test_weight_shape_mismatch_raises_plan_error():
    mod = make_module((5, 12), two_layer)
    with pytest.raises(PlanError, match="fc1"):
        RewriteDenseToLUT(_mismatched_plan())(mod)


AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})


@pytest.mark.skipif("avx512bw" not in host_cpu_flags(), reason="CPU has no AVX-512BW")
@pytest.mark.parametrize("rows,out_features,expect_shuffle", [(128, 32, True), (100, 48, True),
                                                              (16, 32, True), (3, 32, False), (128, 13, True),
                                                              (64, 10, True)])
def test_shuffle_lookup_chosen_by_target_and_shape(rows, out_features, expect_shuffle):
    rng = np.random.default_rng(rows + out_features)
    weight = rng.standard_normal((32, out_features)).astype(np.float32)
    layer = dense_plan_layer("fc", weight, sub_len=4, seed=rows)
    mod = make_module((rows, 32), lambda bb, x: bb.emit(relax.op.matmul(x, relax.const(weight))))
    with AVX512:
        rewritten = RewriteDenseToLUT(Plan([layer]))(mod)
    kinds = [kind for kind, _ in lut_calls(rewritten)]
    if expect_shuffle:  # the row encode writes the codes [C, M] the shuffle lookup reads
        assert kinds == ["encode_dense_rows", "lookup_dense_shuffle"]
    else:
        assert kinds == ["encode_dense", "lookup_dense"]
    x = rng.standard_normal((rows, 32)).astype(np.float32)
    assert_no_near_ties(x, layer.centroids)
    vm = relax.VirtualMachine(tvm.compile(rewritten, AVX512), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, ref.lut_matmul(x, layer.centroids, weight), rtol=1e-5, atol=1e-5)


def test_before_expected_planned_layer():
    """The planned matmul becomes encode + lookup (gather form off-target); the unplanned one stays."""
    layer = dense_plan_layer("fc1", W1, sub_len=3)

    def expected_body(bb, x):
        hidden = emit_lut_dense(bb, x, layer, W1, rows=5)
        return bb.emit(relax.op.matmul(hidden, relax.const(W2)))

    after = RewriteDenseToLUT(Plan([layer]))(make_module((5, 12), two_layer))
    tvm.ir.assert_structural_equal(after, make_module((5, 12), expected_body))


def test_before_expected_higher_rank_input():
    """``x [2, 3, D]`` is reshaped to rows ``[6, D]`` and the result back to ``[2, 3, N]``."""
    layer = dense_plan_layer("fc1", W1, sub_len=6, seed=3)

    def expected_body(bb, x):
        rows = bb.emit(relax.op.reshape(x, (6, 12)))
        return bb.emit(relax.op.reshape(emit_lut_dense(bb, rows, layer, W1, rows=6), (2, 3, 8)))

    before = make_module((2, 3, 12), lambda bb, x: bb.emit(relax.op.matmul(x, relax.const(W1))))
    after = RewriteDenseToLUT(Plan([layer]))(before)
    tvm.ir.assert_structural_equal(after, make_module((2, 3, 12), expected_body))


def test_kind_mismatch_names_layer_and_field():
    """A plan entry binding the dense weight but claiming a conv2d is refused by name."""
    centroids = np.zeros((4, 16, 3), np.float32)
    plan = Plan([LayerPlan("fc1", LayerKind.CONV2D, (12, 8), fingerprint(W1), centroids)])
    with pytest.raises(PlanError, match=r"plan layer 'fc1': field 'kind' is conv2d, but it binds a dense"):
        RewriteDenseToLUT(plan)(make_module((5, 12), two_layer))
