"""Tests for the default dense-op CPU schedule rules (schedules.rules.dense_ops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tvm
import tvm_ffi
from torch import nn
from tvm import relax, tirx
from tvm.relax.frontend.torch import from_exported_program
from tvm.s_tir import dlight
from tvm.script import ir as I
from tvm.script import tirx as T

from schedules.rules.dense_ops import DENSE_OP_RULES, Conv2dNCHW, Fallback, Matmul
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


def _loop_kinds(func: tirx.PrimFunc) -> list:
    kinds = []

    def visit(node):
        kinds.append(node.kind)

    tvm_ffi.structural_walk(func.body, (tirx.For, visit), order="post")
    return kinds


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
                assert tirx.ForKind.PARALLEL in _loop_kinds(func), name


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
            assert tirx.ForKind.VECTORIZED in _loop_kinds(func), name


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
