"""eLUT-NN recipe (lut_tvm.train.elut) on a tiny transformer block built here."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lut_tvm import reference as ref
from lut_tvm.policy import PlanPolicy
from lut_tvm.train import LutConfig, convert, lut_layers
from lut_tvm.train.elut import elut_matmul, train_end_to_end, train_layerwise, use_elut

SEED = 0
WIDTH, TOKENS = 16, 6


class TinyBlock(nn.Module):
    """One pre-norm transformer block (single head) on ``[B, T, WIDTH]`` token features."""

    def __init__(self):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.query, self.key, self.value = (nn.Linear(WIDTH, WIDTH) for _ in range(3))
        self.attn_out = nn.Linear(WIDTH, WIDTH)
        self.up, self.down = nn.Linear(WIDTH, 2 * WIDTH), nn.Linear(2 * WIDTH, WIDTH)

    def forward(self, x):
        h = self.norm1(x)
        scores = self.query(h) @ self.key(h).transpose(1, 2) / WIDTH**0.5
        x = x + self.attn_out(torch.softmax(scores, -1) @ self.value(h))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


@pytest.fixture(scope="module")
def block_and_data():
    torch.manual_seed(SEED)
    model = TinyBlock().eval()
    x = torch.from_numpy(np.random.default_rng(SEED).standard_normal((96, TOKENS, WIDTH)).astype(np.float32))
    config = LutConfig(policy=PlanPolicy(num_centroids=8, dense_sub_len=4, skip_last_dense=False, seed=SEED),
                       calibration_samples=96)
    lut = convert(model, config, x).eval()
    return model, x, lut


def _layerwise(lut, model, x, **kw):
    return train_layerwise(lut, model, x, centroid_epochs=8, weight_epochs=8, lr=3e-3, batch_rows=64,
                           max_rows=None, batch_size=32, seed=SEED, **kw)


def _relative_error(out, target):
    return float(((out - target) ** 2).sum() / (target**2).sum())


def test_layerwise_lowers_each_layer_error_and_the_output_error(block_and_data):
    model, x, kmeans = block_and_data
    lut = copy.deepcopy(kmeans)
    history = _layerwise(lut, model, x)
    assert [h["layer"] for h in history] == ["query", "key", "value", "attn_out", "up", "down"]
    for record in history:
        assert record["error_weights"] < record["error_init"], record
    # Independently: each trained layer against its original on the original's inputs.
    inputs = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, a, o, n=n: inputs.__setitem__(n, (a[0].reshape(-1, a[0].shape[-1]), o.reshape(-1, o.shape[-1]))))
        for n, _ in lut_layers(lut)]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        better = [_relative_error(lut.get_submodule(n)(inputs[n][0]), inputs[n][1])
                  < _relative_error(kmeans.get_submodule(n)(inputs[n][0]), inputs[n][1]) for n in inputs]
        assert sum(better) >= len(better) - 1, better  # every layer but at most one, on inputs it was not fit to
        target = model(x)
        assert _relative_error(lut(x), target) < 0.9 * _relative_error(kmeans(x), target)


def test_straight_through_gradient_reaches_input_centroids_and_weight(block_and_data):
    _, x, kmeans = block_and_data
    layer = copy.deepcopy(kmeans.up)
    use_elut(layer)
    layer.train()
    rows = x.reshape(-1, WIDTH)[:40].clone().requires_grad_(True)
    grad_out = torch.from_numpy(np.random.default_rng(1).standard_normal((40, 2 * WIDTH)).astype(np.float32))
    (layer(rows) * grad_out).sum().backward()
    weight = layer.weight.detach().numpy().astype(np.float64)  # [N, D]
    np.testing.assert_allclose(rows.grad.numpy(), grad_out.numpy() @ weight, rtol=1e-5, atol=1e-5)
    assert float(layer.centroids.grad.abs().sum()) > 0
    assert float(layer.weight.grad.abs().sum()) > 0
    # The centroid gradient is the table gradient with the codes held fixed: sum over the rows coded k of W_c^T g.
    centroids = layer.centroids.detach().numpy()
    codes = ref.encode(rows.detach().numpy(), centroids)
    want = np.zeros_like(centroids, dtype=np.float64)
    for c in range(centroids.shape[0]):
        block = weight[:, 4 * c: 4 * c + 4]  # [N, V]
        for m in range(len(codes)):
            want[c, codes[m, c]] += grad_out.numpy()[m].astype(np.float64) @ block
    # the STE round of T/scale and the output's * scale cancel; only float32 rounding remains
    np.testing.assert_allclose(layer.centroids.grad.numpy(), want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize("scales", ["layer", "column"])
def test_hard_forward_after_training_equals_reference(block_and_data, scales):
    model, x, kmeans = block_and_data
    lut = copy.deepcopy(kmeans)
    train_layerwise(lut, model, x, centroid_epochs=1, weight_epochs=1, lr=3e-3, batch_rows=64, max_rows=None,
                    batch_size=32, scales=scales, seed=SEED)
    inputs = {}
    hooks = [layer.register_forward_pre_hook(lambda m, a, n=n: inputs.__setitem__(n, a[0].reshape(-1, a[0].shape[-1])))
             for n, layer in lut_layers(lut)]
    with torch.no_grad():
        lut(x)
    for hook in hooks:
        hook.remove()
    for name, layer in lut_layers(lut):
        layer_rows = inputs[name].numpy()
        centroids = layer.centroids.detach().numpy()
        weight_dn = layer.weight_dn().detach().numpy()
        bias = layer.bias.detach().numpy()
        with torch.no_grad():
            got = layer(torch.from_numpy(layer_rows)).numpy()
        codes = ref.encode(layer_rows, centroids)
        margin = ref.encode_margin(layer_rows, centroids).min(1)
        sure = margin > 1e-3  # rows whose float32 codes cannot differ from the float64 ones
        tables = ref.build_tables(centroids, weight_dn)
        if scales == "layer":
            tables_q, scale = ref.quantize_tables(tables)
            want = ref.lookup_accumulate(codes, tables_q).astype(np.float32) * scale + bias
            np.testing.assert_array_equal(got[sure], want[sure], err_msg=name)
            np.testing.assert_array_equal(got[sure], ref.lut_matmul(layer_rows, centroids, weight_dn, bias)[sure])
        else:  # per-column scales, written out in NumPy
            col_scale = np.abs(tables).max(axis=(0, 1)) / ref.INT8_MAX
            tables_q = np.clip(np.rint(tables / col_scale), -ref.INT8_MAX, ref.INT8_MAX).astype(np.int8)
            acc = ref.lookup_accumulate(codes, tables_q)
            want = acc.astype(np.float32) * col_scale.astype(np.float32) + bias
            np.testing.assert_array_equal(got[sure], want[sure], err_msg=name)
        assert sure.mean() > 0.9


def test_layer_scales_match_the_layers_hard_mode(block_and_data):
    _, x, kmeans = block_and_data
    layer = kmeans.query
    rows = x.reshape(-1, WIDTH)
    with torch.no_grad():
        want = copy.deepcopy(layer).eval()(rows)
        got = elut_matmul(rows, layer.centroids, layer.weight_dn(), "layer") + layer.bias
    assert torch.equal(got, want)


def test_layerwise_resume_from_checkpoint_ends_the_same(block_and_data, tmp_path):
    model, x, kmeans = block_and_data
    straight = copy.deepcopy(kmeans)
    history = _layerwise(straight, model, x)
    resumed = copy.deepcopy(kmeans)
    path = tmp_path / "layerwise.pt"
    first = _layerwise(resumed, model, x, checkpoint=path, max_layers=2)
    assert len(first) == 2
    again = copy.deepcopy(kmeans)  # a fresh process: start from the k-means model and the checkpoint
    rest = _layerwise(again, model, x, checkpoint=path)
    assert rest == history
    for key, value in straight.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_end_to_end_lowers_output_error_and_resumes(block_and_data, tmp_path):
    model, x, kmeans = block_and_data
    names = ["query", "up"]
    run = lambda m, epochs, ckpt=None: train_end_to_end(  # noqa: E731
        m, model, x, hidden_modules=names, output_loss=F.mse_loss, epochs=epochs, lr=3e-3, batch_size=16,
        seed=SEED, checkpoint=ckpt)
    straight = copy.deepcopy(kmeans)
    history = run(straight, 3)
    with torch.no_grad():
        target = model(x)
        assert _relative_error(straight(x), target) < _relative_error(kmeans(x), target)
    path = tmp_path / "e2e.pt"
    run(copy.deepcopy(kmeans), 1, path)
    again = copy.deepcopy(kmeans)
    assert run(again, 3, path) == history
    for key, value in straight.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_column_scales_are_the_layers_and_the_exported_plans(block_and_data, tmp_path):
    """``use_elut(..., "column")`` sets each layer's table_quant, so the hard forward and the plan
    that export_plan writes use the per-column scales the layer was trained with."""
    from lut_tvm.plan import TableQuant  # pylint: disable=import-outside-toplevel
    from lut_tvm.train import export_plan  # pylint: disable=import-outside-toplevel

    _, x, lut = block_and_data
    lut = use_elut(copy.deepcopy(lut), "column")
    assert {l.table_quant for _, l in lut_layers(lut)} == {TableQuant.INT8_PER_COLUMN}
    with torch.no_grad():
        trained_forward = lut(x).numpy()
        hard = use_elut(lut, None)(x).numpy()  # the layers' own hard mode
    np.testing.assert_array_equal(hard, trained_forward)
    plan = export_plan(lut, tmp_path / "plan.npz")
    assert {l.table_quant for l in plan.layers} == {TableQuant.INT8_PER_COLUMN}
