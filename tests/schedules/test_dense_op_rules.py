"""Tests for the default dense-op CPU schedule rules (schedules.rules.dense_ops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
from torch import nn
from tvm import relax, tirx
from tvm.relax.frontend.torch import from_exported_program
from tvm.s_tir import dlight
from tvm.script import ir as I
from tvm.script import tirx as T

from lut_tvm._tvm_compat import walk_tir
from lut_tvm.testing import loop_kinds
from relay_passes.fast_math import FastMath
from schedules.rules.dense_ops import DENSE_OP_RULES, Conv2dNCHW, Fallback, Injective, Matmul
from schedules.rules.dense_ops import Reduction, RowReduction
from schedules.rules.dense_ops._loops import MIN_PARALLEL_WORK


def _cpu_target() -> tvm.target.Target:
    cpu = tvm.target.codegen.llvm_get_system_cpu()
    return tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": 2})


TARGET = _cpu_target()


def _legalize_and_fuse(mod: tvm.IRModule) -> tvm.IRModule:
    seq = tvm.transform.Sequential(
        [
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ]
    )
    with TARGET:
        return seq(mod)


def _schedule(mod: tvm.IRModule) -> tvm.IRModule:
    with TARGET:
        return dlight.ApplyDefaultSchedule(*DENSE_OP_RULES)(mod)


def _prim_funcs(mod: tvm.IRModule):
    return [(gv.name_hint, f) for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)]


def _check_scheduled(mod: tvm.IRModule) -> None:
    """Every PrimFunc is marked scheduled; non-trivial ones have a parallel loop."""
    funcs = _prim_funcs(mod)
    assert funcs
    for name, func in funcs:
        assert func.attrs is not None and func.attrs.get("tirx.is_scheduled", 0) == 1, name
        out = func.params[-1]
        if all(isinstance(d, tirx.IntImm) for d in out.shape):
            numel = int(np.prod([int(d) for d in out.shape]))
            if numel >= MIN_PARALLEL_WORK:
                assert tirx.ForKind.PARALLEL in loop_kinds(func), name


def _run(mod: tvm.IRModule, *inputs: np.ndarray) -> np.ndarray:
    ex = tvm.compile(mod, TARGET)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    return out.numpy() if hasattr(out, "numpy") else out[0].numpy()


def _check_torch(model: nn.Module, *shapes, params_as_input: bool = False) -> tvm.IRModule:
    torch.manual_seed(0)
    model = model.eval()
    inputs = tuple(torch.randn(*s) for s in shapes)
    exported = torch.export.export(model, inputs)
    mod = from_exported_program(exported, keep_params_as_input=params_as_input)
    args = [x.numpy() for x in inputs]
    if params_as_input:
        mod, params = relax.frontend.detach_params(mod)
        args += [p.numpy() for p in params["main"]]
    scheduled = _schedule(_legalize_and_fuse(mod))
    _check_scheduled(scheduled)
    with torch.no_grad():
        expected = model(*inputs).numpy()
    np.testing.assert_allclose(_run(scheduled, *args), expected, rtol=1e-4, atol=1e-4)
    return scheduled


class _MLP(nn.Module):
    def __init__(self, k=33, n=13, out=10):
        super().__init__()
        self.l1, self.l2 = nn.Linear(k, n), nn.Linear(n, out)

    def forward(self, x):
        return self.l2(F.relu(self.l1(x)))


class _CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 13, 3, stride=2)
        self.fc = nn.Linear(13 * 2 * 2, 7)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.avg_pool2d(F.relu(self.c2(x)), 2, stride=1)
        return self.fc(x.flatten(1))


class _Block(nn.Module):
    """MiniLM-style encoder layer (post-norm) + mean pooling."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x):
        b, l, d = x.shape
        q, k, v = self.qkv(x).reshape(b, l, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        x = self.ln1(x + self.o((att @ v).transpose(1, 2).reshape(b, l, d)))
        x = self.ln2(x + self.ff2(F.gelu(self.ff1(x))))
        return x.mean(1)


def test_mlp_odd_shapes_uses_matmul_rule():
    mod = _check_torch(_MLP(), (7, 33))
    for name, func in _prim_funcs(mod):
        if "matmul" in name:
            assert tirx.ForKind.VECTORIZED in loop_kinds(func), name


def test_mlp_larger_is_parallel_and_params_as_input():
    _check_torch(_MLP(k=256, n=512, out=64), (64, 256), params_as_input=True)


def test_small_cnn():
    mod = _check_torch(_CNN(), (2, 3, 15, 15))
    assert any("conv2d" in name for name, _ in _prim_funcs(mod))


def test_transformer_block():
    _check_torch(_Block(), (2, 7, 32))


def test_batched_matmul_broadcast_and_transpose():
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((3, 7, 33), "float32"))
    w = relax.Var("w", relax.TensorType((13, 33), "float32"))
    with bb.function("main", [a, w]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(a, relax.op.permute_dims(w)))
            y = bb.emit(relax.op.nn.softmax(relax.op.add(y, relax.const(1.0))))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    mod = _schedule(_legalize_and_fuse(bb.get()))
    _check_scheduled(mod)
    an = np.random.rand(3, 7, 33).astype("float32")
    wn = np.random.rand(13, 33).astype("float32")
    expected = torch.softmax(torch.from_numpy(an @ wn.T + 1.0), -1).numpy()
    np.testing.assert_allclose(_run(mod, an, wn), expected, rtol=1e-5, atol=1e-5)


def test_dynamic_shape_is_scheduled():
    n = tirx.Var("n", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((n, 33), "float32"))
    w = relax.Var("w", relax.TensorType((33, 13), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(relax.op.matmul(x, w)))
            gamma = relax.const(np.ones(13, "float32"))
            beta = relax.const(np.zeros(13, "float32"))
            y = bb.emit(relax.op.nn.layer_norm(y, gamma, beta, axes=[-1]))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    mod = _schedule(_legalize_and_fuse(bb.get()))
    _check_scheduled(mod)
    xn = np.random.rand(5, 33).astype("float32")
    wn = np.random.rand(33, 13).astype("float32")
    expected = F.layer_norm(torch.relu(torch.from_numpy(xn @ wn)), (13,)).numpy()
    np.testing.assert_allclose(_run(mod, xn, wn), expected, rtol=1e-4, atol=1e-4)


@I.ir_module
class _Scan:
    @T.prim_func(s_tir=True)
    def main(a: T.Buffer((64, 40), "float32"), b: T.Buffer((64, 40), "float32")):
        for i in range(64):
            with T.sblock("scan"):
                vi = T.axis.spatial(64, i)
                T.reads(a[vi, 0:40], b[vi, 0:40])
                T.writes(b[vi, 0:40])
                b[vi, 0] = a[vi, 0]
                for j in range(1, 40):
                    b[vi, j] = b[vi, j - 1] + a[vi, j]


def test_fallback_never_declines_and_stays_correct():
    func = _Scan["main"]
    assert Fallback().apply(func, TARGET, False) is not None
    assert Matmul().apply(func, TARGET, False) is None
    assert Conv2dNCHW().apply(func, TARGET, False) is None
    mod = _schedule(tvm.IRModule({"main": func}))
    assert mod["main"].attrs["tirx.is_scheduled"] == 1
    lib = tvm.compile(mod, TARGET)
    an = np.random.rand(64, 40).astype("float32")
    bn = tvm.runtime.tensor(np.zeros((64, 40), "float32"))
    lib["main"](tvm.runtime.tensor(an), bn)
    np.testing.assert_allclose(bn.numpy(), np.cumsum(an, axis=1), rtol=1e-5)


@pytest.mark.parametrize("rule", DENSE_OP_RULES)
def test_rules_decline_non_cpu_targets(rule):
    func = _Scan["main"]
    assert rule.apply(func, tvm.target.Target("cuda"), False) is None


def _vector_reductions(func: tirx.PrimFunc) -> int:
    """Vectorized loops whose body updates a reduction block (vector partial sums)."""
    count = 0
    for loop in walk_tir(func.body):
        if isinstance(loop, tirx.For) and loop.kind == tirx.ForKind.VECTORIZED:
            iters = [iv for node in walk_tir(loop.body) if hasattr(node, "iter_vars")
                     for iv in node.iter_vars]
            count += any(iv.iter_type == tirx.IterVar.CommReduce for iv in iters)
    return count


def _row_funcs(mod: tvm.IRModule, *names: str):
    """The PrimFuncs of ``mod`` whose name contains one of ``names``."""
    found = [(n, f) for n, f in _prim_funcs(mod) if any(k in n for k in names)]
    assert found, [n for n, _ in _prim_funcs(mod)]
    return found


def _masked_softmax_and_norm(shape, fast_math: bool) -> tvm.IRModule:
    """``where(mask, -1e4, softmax(x)) + layer_norm(x)`` with a per-row int8 mask, the form
    MiniLM's attention takes; with ``fast_math`` softmax becomes ``fast_softmax``."""
    k = shape[-1]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    mask = relax.Var("mask", relax.TensorType((*shape[:-1], 1), "int8"))
    with bb.function("main", [x, mask]):
        with bb.dataflow():
            soft = bb.emit(relax.op.nn.softmax(x, axis=-1))
            masked = bb.emit(relax.op.where(relax.op.astype(mask, "bool"),
                                            relax.const(-1e4, "float32"), soft))
            gamma = relax.const(np.linspace(0.5, 1.5, k, dtype="float32"))
            beta = relax.const(np.linspace(-1.0, 1.0, k, dtype="float32"))
            norm = bb.emit(relax.op.nn.layer_norm(x, gamma, beta, axes=[-1]))
            out = bb.emit_output(relax.op.add(masked, norm))
        bb.emit_func_output(out)
    mod = bb.get()
    return FastMath()(mod) if fast_math else mod


def _masked_softmax_and_norm_np(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    soft = np.where(mask.astype(bool), np.float32(-1e4), e / e.sum(-1, keepdims=True))
    k = x.shape[-1]
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    gamma, beta = np.linspace(0.5, 1.5, k), np.linspace(-1.0, 1.0, k)
    return soft + (x - mean) / np.sqrt(var + 1e-5) * gamma + beta


@pytest.mark.parametrize("fast_math", [False, True])
@pytest.mark.parametrize("row", [37, 36, 80])
def test_row_reduction_softmax_mask_layer_norm(row, fast_math):
    shape = (3, 43, row)
    mod = _schedule(_legalize_and_fuse(_masked_softmax_and_norm(shape, fast_math)))
    _check_scheduled(mod)
    rng = np.random.default_rng(row)
    xn = (rng.standard_normal(shape) * 3).astype("float32")
    maskn = (rng.random((*shape[:-1], 1)) < 0.3).astype("int8")
    np.testing.assert_allclose(_run(mod, xn, maskn), _masked_softmax_and_norm_np(xn, maskn),
                               rtol=1e-4, atol=2e-5)
    for name, func in _row_funcs(mod, "softmax", "layer_norm"):
        kinds = loop_kinds(func)
        assert tirx.ForKind.PARALLEL in kinds and tirx.ForKind.VECTORIZED in kinds, name
        # Rows of a multiple of 4: max/sum (softmax), mean/variance (layer_norm) as vectors.
        assert _vector_reductions(func) == (2 if row % 4 == 0 else 0), name


def test_row_reduction_is_the_reduction_rules_choice():
    mod = _legalize_and_fuse(_masked_softmax_and_norm((2, 16, 64), fast_math=True))
    for name, func in _row_funcs(mod, "softmax", "layer_norm"):
        ours = RowReduction().apply(func, TARGET, False)
        assert ours is not None, name
        tvm.ir.assert_structural_equal(Reduction().apply(func, TARGET, False).mod, ours.mod)


def test_batched_attention_matmuls_odd_shapes():
    """q @ k^T and p @ v of a batch of heads (batched, no broadcast), odd sizes."""
    bb = relax.BlockBuilder()
    q = relax.Var("q", relax.TensorType((3, 19, 5), "float32"))
    k = relax.Var("k", relax.TensorType((3, 5, 19), "float32"))
    v = relax.Var("v", relax.TensorType((3, 19, 7), "float32"))
    with bb.function("main", [q, k, v]):
        with bb.dataflow():
            att = bb.emit(relax.op.matmul(q, k))
            out = bb.emit_output(relax.op.matmul(att, v))
        bb.emit_func_output(out)
    legalized = _legalize_and_fuse(bb.get())
    for name, func in _row_funcs(legalized, "matmul"):
        assert Matmul().apply(func, TARGET, False) is not None, name
    mod = _schedule(legalized)
    _check_scheduled(mod)
    for name, func in _row_funcs(mod, "matmul"):
        kinds = loop_kinds(func)
        assert tirx.ForKind.VECTORIZED in kinds and tirx.ForKind.UNROLLED in kinds, name
    rng = np.random.default_rng(1)
    qn, kn, vn = (rng.standard_normal(s).astype("float32") for s in
                  ((3, 19, 5), (3, 5, 19), (3, 19, 7)))
    np.testing.assert_allclose(_run(mod, qn, kn, vn), (qn @ kn) @ vn, rtol=1e-4, atol=1e-4)


def test_norms_over_several_axes_odd_shapes():
    """layer_norm over the last two axes, rms_norm and group_norm: still correct (row
    reductions over fused axes or dlight's rule), every function scheduled."""
    shape = (2, 6, 5, 12)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    ones = relax.const(np.ones(shape[-2:], "float32"))
    zeros = relax.const(np.zeros(shape[-2:], "float32"))
    weight = relax.const(np.linspace(0.5, 1.5, shape[-1], dtype="float32"))
    gamma = relax.const(np.linspace(0.5, 1.5, shape[1], dtype="float32"))
    beta = relax.const(np.zeros(shape[1], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            ln = bb.emit(relax.op.nn.layer_norm(x, ones, zeros, axes=[-2, -1]))
            rms = bb.emit(relax.op.nn.rms_norm(x, weight, axes=[-1]))
            gn = bb.emit(relax.op.nn.group_norm(x, gamma, beta, num_groups=3, channel_axis=1,
                                                axes=[2, 3]))
            out = bb.emit_output(relax.op.add(relax.op.add(ln, rms), gn))
        bb.emit_func_output(out)
    mod = _schedule(_legalize_and_fuse(bb.get()))
    _check_scheduled(mod)
    xn = np.random.default_rng(3).standard_normal(shape).astype("float32")
    mean, var = xn.mean((-2, -1), keepdims=True), xn.var((-2, -1), keepdims=True)
    ln_np = (xn - mean) / np.sqrt(var + 1e-5)
    rms_np = xn / np.sqrt((xn ** 2).mean(-1, keepdims=True) + 1e-5) * np.linspace(0.5, 1.5, 12)
    grouped = xn.reshape(2, 3, 2, 5, 12)
    g_mean, g_var = grouped.mean((2, 3, 4), keepdims=True), grouped.var((2, 3, 4), keepdims=True)
    gn_np = ((grouped - g_mean) / np.sqrt(g_var + 1e-5)).reshape(shape)
    gn_np = gn_np * np.linspace(0.5, 1.5, 6).reshape(1, 6, 1, 1)
    np.testing.assert_allclose(_run(mod, xn), ln_np + rms_np + gn_np, rtol=1e-4, atol=1e-4)


def test_matmul_epilogue_reading_the_bias_add_twice():
    """Linear + fast GELU fuses to matmul -> add -> x * f(x): the add's output is read twice,
    so it must not be reverse-inlined away (TVM would leave it unwritten)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((7, 33), "float32"))
    rng = np.random.default_rng(4)
    wn, bn = rng.standard_normal((33, 40)).astype("float32"), rng.standard_normal(40).astype("float32")
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.add(relax.op.matmul(x, relax.const(wn)), relax.const(bn)))
            out = bb.emit_output(relax.op.nn.gelu(y))
        bb.emit_func_output(out)
    legalized = _legalize_and_fuse(FastMath()(bb.get()))
    assert len(_prim_funcs(legalized)) == 1
    mod = _schedule(legalized)
    _check_scheduled(mod)
    xn = rng.standard_normal((7, 33)).astype("float32")
    yn = xn @ wn + bn
    expected = yn * 0.5 * (1.0 + np.vectorize(math.erf)(yn / math.sqrt(2.0)))
    np.testing.assert_allclose(_run(mod, xn), expected, rtol=1e-4, atol=1e-4)


def test_injective_transpose_reshape_add_odd_shapes():
    """Odd outer sizes; the output row (48) is short enough to be one vector loop."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((3, 16, 45), "float32"))
    bias = np.linspace(-1.0, 1.0, 16 * 3, dtype="float32").reshape(1, 16 * 3)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = relax.op.reshape(relax.op.permute_dims(x, [2, 0, 1]), (45, 16 * 3))
            out = bb.emit_output(relax.op.multiply(relax.op.add(y, relax.const(bias)),
                                                   relax.const(2.0, "float32")))
        bb.emit_func_output(out)
    legalized = _legalize_and_fuse(bb.get())
    (name, func), = _prim_funcs(legalized)
    assert Injective().apply(func, TARGET, False) is not None, name
    mod = _schedule(legalized)
    _check_scheduled(mod)
    assert tirx.ForKind.VECTORIZED in loop_kinds(mod[name])
    xn = np.random.default_rng(5).standard_normal((3, 16, 45)).astype("float32")
    expected = (xn.transpose(2, 0, 1).reshape(45, 16 * 3) + bias) * 2.0
    np.testing.assert_allclose(_run(mod, xn), expected, rtol=1e-6, atol=1e-6)
