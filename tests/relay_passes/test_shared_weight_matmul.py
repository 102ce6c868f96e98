"""SharedWeightMatmul: a matmul against a constant of identical batch slices becomes a plain ``[D, N]``
matmul (structurally; other matmuls untouched), so ``nn.MultiheadAttention``'s packed in_proj, which
torch.export leaves as such a batched matmul, is a dense layer site named as the model names it, found by
the optimizer, with the fingerprint the ONNX import shows; planned as a LUT or int8 layer it compiles to
the NumPy reference of the attention block."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

import lut_tvm
from lut_tvm import reference as ref
from lut_tvm.compiler import layer_sites
from lut_tvm.frontends import import_model
from lut_tvm.int8_reference import int8_dense
from lut_tvm.kmeans import kmeans_centroids
from lut_tvm.optimizer.layers import model_layers
from lut_tvm.plan import LayerPlan, Plan
from lut_tvm.testing import assert_no_near_ties, compile_with_codes, relax_module
from lut_tvm.weights import LayerKind, fingerprint
from relay_passes.shared_weight_matmul import SharedWeightMatmul

pytestmark = pytest.mark.filterwarnings("ignore:Renaming name:UserWarning")

EMBED, HEADS, SEQ, BATCH = 16, 2, 5, 3


def test_identical_slices_become_one_matrix():
    matrix = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    stacked = np.ascontiguousarray(np.broadcast_to(matrix, (3, 8, 5)))
    before = relax_module((3, 4, 8), lambda bb, x: relax.op.matmul(x, relax.const(stacked)))
    expected = relax_module((3, 4, 8), lambda bb, x: relax.op.matmul(x, relax.const(matrix)))
    tvm.ir.assert_structural_equal(SharedWeightMatmul()(before), expected)


@pytest.mark.parametrize("case", ["different slices", "weight widens the batch"])
def test_other_batched_matmuls_are_left_alone(case):
    rng = np.random.default_rng(1)
    if case == "different slices":
        weight, shape = rng.standard_normal((3, 8, 5)).astype(np.float32), (3, 4, 8)
    else:  # x [4, 8] @ W [3, 8, 5] is [3, 4, 5]; W[0] alone would give [4, 5]
        weight, shape = np.ascontiguousarray(np.broadcast_to(rng.standard_normal((8, 5)), (3, 8, 5)),
                                             dtype=np.float32), (4, 8)
    before = relax_module(shape, lambda bb, x: relax.op.matmul(x, relax.const(weight)))
    tvm.ir.assert_structural_equal(SharedWeightMatmul()(before), before)


class Attention(nn.Module):
    """One self-attention block: packed in_proj, heads, out_proj."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(EMBED, HEADS, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Attention().eval()


def _x(seed: int, count: int = BATCH) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, SEQ, EMBED)).astype(np.float32)


def _in_proj_dn(model) -> np.ndarray:
    return model.attn.in_proj_weight.detach().numpy().T.copy()


def _source(model, frontend, tmp_path):
    x = torch.from_numpy(_x(0))
    if frontend == "pt2":
        torch.export.save(torch.export.export(model, (x,)), str(tmp_path / "attn.pt2"))
        return str(tmp_path / "attn.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(tmp_path / "attn.onnx"), dynamo=False)
    return str(tmp_path / "attn.onnx")


@pytest.mark.parametrize("frontend", ["pt2", "onnx"])
def test_in_proj_is_a_dense_site_the_optimizer_finds(model, frontend, tmp_path):
    imported = import_model(_source(model, frontend, tmp_path), (_x(0),))
    dense = [s for s in layer_sites(imported) if s.kind is LayerKind.DENSE]
    in_proj = fingerprint(_in_proj_dn(model))
    assert [s.fingerprint for s in dense] == [in_proj, fingerprint(model.attn.out_proj.weight.detach().numpy().T)]
    assert dense[0].weight.shape == (EMBED, 3 * EMBED)
    names = [layer.name for layer in model_layers(imported, sub_lens=(4,), int8=True)]
    assert len(names) == 2
    if frontend == "pt2":
        assert names == ["attn.in_proj_weight", "attn.out_proj"]


def _attention_reference(model, x: np.ndarray, in_proj) -> np.ndarray:
    """The block in NumPy with ``in_proj(rows [M, D]) -> [M, 3D]`` (bias included) in place of the packed matmul."""
    attn = model.attn
    qkv = in_proj(x.reshape(-1, EMBED)).reshape(len(x), SEQ, 3, HEADS, EMBED // HEADS).astype(np.float64)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(EMBED // HEADS)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    heads = (weights / weights.sum(-1, keepdims=True)) @ v
    out_w = attn.out_proj.weight.detach().numpy().astype(np.float64)
    return heads.transpose(0, 2, 1, 3).reshape(len(x), SEQ, EMBED) @ out_w.T + attn.out_proj.bias.detach().numpy()


@pytest.mark.parametrize("mode", ["lut", "int8"])
def test_planned_in_proj_compiles_to_the_reference(model, mode, tmp_path):
    source = _source(model, "pt2", tmp_path)
    weight, bias = _in_proj_dn(model), model.attn.in_proj_bias.detach().numpy()
    x = _x(2)
    if mode == "int8":
        plan = Plan([LayerPlan.int8_dense("in_proj", weight.shape, fingerprint(weight))])
        want = _attention_reference(model, x, lambda rows: int8_dense(rows, weight, bias))
        compiled = lut_tvm.compile(source, plan, tuning_logs=False)
        assert compiled.info.lut_layers == ["in_proj"]
        got = compiled(x)
    else:
        centroids = kmeans_centroids(_x(3, 64).reshape(-1, EMBED), 4, 16, 0)
        assert_no_near_ties(x.reshape(-1, EMBED), centroids, "in_proj")
        plan = Plan([LayerPlan("in_proj", LayerKind.DENSE, weight.shape, fingerprint(weight), centroids)])
        want = _attention_reference(model, x, lambda rows: ref.lut_matmul(rows, centroids, weight, bias))
        tapped = compile_with_codes(source, plan, tuning_logs=False)
        got, codes = tapped(x)
        assert tapped.compiled.info.lut_layers == ["in_proj"] and len(codes) == 1
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # the comparison tells the planned layer from the float one
        assert np.abs(model(torch.from_numpy(x)).numpy() - got).max() > 1e-4
