"""LutConv1d: the hard forward is reference.lut_conv2d of the height-1 input (bit for bit), ste/soft
gradients flow, to_dense / to_conv2d keep the geometry, and convert_conv1d follows the policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lut_tvm import reference as ref
from lut_tvm.errors import PlanError
from lut_tvm.policy import PlanPolicy
from lut_tvm.train import LutConfig, LutLinear, export_plan, lut_layers, train_reconstruction
from lut_tvm.train.conv1d import LutConv1d, conv1d_rows, convert_conv1d, convert_with_conv1d


def _conv(seed=0, cin=3, cout=5, kernel=5, stride=1, padding=2, dilation=1, k=16, temperature=2.0):
    torch.manual_seed(seed)
    dense = nn.Conv1d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation)
    cents = np.random.default_rng(seed).standard_normal((cin, k, kernel)).astype(np.float32)
    return LutConv1d.from_conv(dense, cents, temperature), dense


def _np(t):
    return t.detach().numpy()


@pytest.mark.parametrize("stride,padding,dilation", [(1, 2, 1), (2, 2, 1), (1, 0, 2), (2, 3, 2)])
def test_hard_forward_matches_reference_conv2d_of_height_one(stride, padding, dilation):
    layer, _ = _conv(stride=stride, padding=padding, dilation=dilation)
    x = np.random.default_rng(2).standard_normal((2, 3, 17)).astype(np.float32)
    got = _np(layer.eval()(torch.from_numpy(x)))
    want = ref.lut_conv2d(x[:, :, None, :], _np(layer.centroids), layer.canonical_weight(), _np(layer.bias),
                          (1, stride), (0, padding, 0, padding), (1, dilation))[:, :, 0, :]
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert np.abs(got - _np(layer.to_dense()(torch.from_numpy(x)))).max() > 1e-2  # a LUT, not the conv


def test_rows_are_reference_im2col():
    x = np.random.default_rng(3).standard_normal((2, 4, 11)).astype(np.float32)
    rows, (batch, out_len) = conv1d_rows(torch.from_numpy(x), 3, 2, 1, 2)
    want, (wb, wh, ww) = ref.im2col_nchw(x[:, :, None, :], (1, 3), (1, 2), (0, 1, 0, 1), (1, 2))
    assert (batch, out_len) == (wb, ww) and wh == 1
    np.testing.assert_array_equal(_np(rows), want)


def test_ste_value_is_hard_and_gradients_reach_centroids_weight_and_temperature():
    layer, _ = _conv()
    x = torch.randn(4, 3, 16)
    hard = layer.eval()(x)
    layer.train()
    out = layer(x)
    torch.testing.assert_close(out, hard, rtol=0, atol=0)
    out.square().sum().backward()
    for name in ("centroids", "weight", "bias", "log_temperature"):
        grad = getattr(layer, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_soft_mode_gradcheck():
    layer, _ = _conv(cin=2, cout=3, kernel=3, padding=1, k=4)
    layer = layer.double()
    layer.mode = "soft"
    x = torch.randn(2, 2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: layer(inp), (x,))


def test_to_dense_and_to_conv2d_keep_weights_and_geometry():
    layer, dense = _conv(stride=2, padding=1, dilation=2)
    x = torch.randn(2, 3, 20)
    back = layer.to_dense()
    assert isinstance(back, nn.Conv1d)
    torch.testing.assert_close(back(x), dense(x))
    as2d = layer.to_conv2d()
    torch.testing.assert_close(as2d(x[:, :, None, :])[:, :, 0, :], dense(x))
    assert layer.canonical_weight().shape == tuple(as2d.weight.shape)


class Net1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(),
                                      nn.Conv1d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
                                      nn.Conv1d(8, 8, 3, padding=1), nn.ReLU())
        self.fc1 = nn.Linear(8 * 10, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.features(x).flatten(1))))


def _net():
    torch.manual_seed(0)
    return Net1d().eval()


def test_convert_with_conv1d_follows_the_policy_and_kmeans_fits_inputs():
    model = _net()
    x = np.random.default_rng(0).standard_normal((64, 1, 20)).astype(np.float32)
    lut = convert_with_conv1d(model, LutConfig(policy=PlanPolicy(seed=0)), x)
    kinds = {name: type(layer) for name, layer in lut_layers(lut)}
    assert kinds == {"features.2": LutConv1d, "features.4": LutConv1d, "fc1": LutLinear}
    assert isinstance(lut.features[0], nn.Conv1d) and isinstance(lut.fc2, nn.Linear)
    assert lut.features[2].centroids.shape == (8, 16, 3)
    assert isinstance(model.features[2], nn.Conv1d)  # original untouched
    with torch.no_grad():
        out, want = lut(torch.from_numpy(x)), model(torch.from_numpy(x))
    # k-means on the real inputs: close to the original, far better than random centroids
    rel = float((out - want).norm() / want.norm())
    assert rel < 0.5
    plan = export_plan(lut)
    assert {layer.name for layer in plan.layers} == set(kinds)


def test_convert_conv1d_overrides_and_bad_v():
    model = _net()
    x = np.random.default_rng(0).standard_normal((32, 1, 20)).astype(np.float32)
    lut = convert_conv1d(model, LutConfig(policy=PlanPolicy(sub_len_overrides={"features.2": 12},
                                                            skip_first_conv=False)), x)
    assert lut.features[0].centroids.shape == (1, 16, 5)
    assert lut.features[2].centroids.shape == (2, 16, 12)
    with pytest.raises(PlanError, match="V = 7"):
        convert_conv1d(model, LutConfig(policy=PlanPolicy(sub_len_overrides={"features.2": 7})), x)


def test_reconstruction_recipe_trains_conv1d_layers():
    model = _net()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 20)).astype(np.float32)
    y = rng.integers(0, 4, 64)
    lut = convert_with_conv1d(model, LutConfig(policy=PlanPolicy(seed=0)), x)
    before = lut.features[2].centroids.detach().clone()
    history = train_reconstruction(lut, model, (x, y), fraction=1.0, epochs=2, batch_size=16, seed=0)
    assert len(history) == 2 and np.isfinite(history[-1]["loss"])
    assert not torch.equal(before, lut.features[2].centroids.detach())
