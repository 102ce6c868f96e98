"""convert(): which layers become LUTs (PlanPolicy), k-means on each layer's real inputs, LutConfig."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lut_tvm.errors import LutTvmError, PlanError
from lut_tvm.kmeans import kmeans_centroids
from lut_tvm.policy import PlanPolicy
from lut_tvm.train import LutConfig, LutConv2d, LutLinear, convert, lut_layers, select_modules


class Net(nn.Module):
    """Nested modules: a conv stack (Sequential) and a head with two Linears."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 1), nn.ReLU())
        self.head = nn.ModuleDict({"fc1": nn.Linear(8 * 8 * 8, 32), "fc2": nn.Linear(32, 10)})

    def forward(self, x):
        h = self.features(x).flatten(1)
        return self.head["fc2"](torch.relu(self.head["fc1"](h)))


def _net():
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((96, 1, 8, 8), dtype=np.float32)


def test_default_policy_skips_first_conv_and_last_linear(images):
    model = _net()
    lut = convert(model, LutConfig(policy=PlanPolicy(max_rows=512)), images)
    layers = dict(lut_layers(lut))
    assert list(layers) == ["features.2", "features.4", "head.fc1"]
    assert isinstance(lut.features[0], nn.Conv2d) and isinstance(lut.head["fc2"], nn.Linear)
    assert isinstance(layers["features.2"], LutConv2d) and isinstance(layers["head.fc1"], LutLinear)
    # V defaults: 9 for 3x3 (one channel's window), 4 for 1x1, 16 for dense; K = 16
    assert [tuple(l.centroids.shape) for l in layers.values()] == [(4, 16, 9), (2, 16, 4), (32, 16, 16)]
    assert all(l.temperature > 0 for l in layers.values())
    # the original is untouched and the copy's LUT layers start from its weights
    assert not lut_layers(model)
    torch.testing.assert_close(layers["head.fc1"].weight, model.head["fc1"].weight)
    assert layers["head.fc1"].weight.data_ptr() != model.head["fc1"].weight.data_ptr()
    assert lut.lut_config == LutConfig(policy=PlanPolicy(max_rows=512)).to_dict()


def test_linear_centroids_are_kmeans_of_the_layer_inputs():
    """For an MLP's first layer the inputs are the data: the centroids are exactly k-means of it."""
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    x = np.random.default_rng(1).standard_normal((200, 16)).astype(np.float32)
    policy = PlanPolicy(dense_sub_len=4, skip_last_dense=False, max_rows=256, seed=3)
    lut = convert(mlp, LutConfig(policy=policy, batch_size=32), x)
    np.testing.assert_array_equal(lut[0].centroids.detach().numpy(), kmeans_centroids(x, 4, 16, 3))
    # the second layer saw ReLU(fc1(x)): its centroids are non-negative combinations of those rows
    hidden = torch.relu(mlp[0](torch.from_numpy(x))).detach().numpy()
    np.testing.assert_allclose(lut[2].centroids.detach().numpy(), kmeans_centroids(hidden, 4, 16, 3),
                               rtol=1e-5, atol=1e-6)


def test_conv_centroids_are_kmeans_of_the_im2col_rows(images):
    from lut_tvm import reference as ref

    model = _net()
    policy = PlanPolicy(only=["features.0"], max_rows=100_000, seed=2)
    lut = convert(model, LutConfig(policy=policy), images)
    rows, _ = ref.im2col_nchw(images, (3, 3), (1, 1), (1, 1, 1, 1))
    np.testing.assert_array_equal(lut.features[0].centroids.detach().numpy(), kmeans_centroids(rows, 9, 16, 2))


def test_policy_only_exclude_overrides_and_errors(images):
    model = _net()
    chosen = select_modules(model, PlanPolicy(exclude=["features.4"], sub_len_overrides={"head.fc1": 8}))
    assert [(n, v) for n, _, v in chosen] == [("features.2", 9), ("head.fc1", 8)]
    chosen = select_modules(model, PlanPolicy(only=["features.0", "head.fc2"]))
    assert [n for n, _, _ in chosen] == ["features.0", "head.fc2"]
    with pytest.raises(PlanError, match="head.fc9"):
        select_modules(model, PlanPolicy(only=["head.fc9"]))
    with pytest.raises(PlanError, match="'head.fc1'.*not a multiple of V = 7"):
        select_modules(model, PlanPolicy(sub_len_overrides={"head.fc1": 7}))


def test_calibration_from_a_loader_limited_to_calibration_samples(images):
    model = _net()
    loader = [(torch.from_numpy(images[i:i + 10]), torch.zeros(10)) for i in range(0, 96, 10)]
    seen = []
    model.features[2].register_forward_hook(lambda m, a, o: seen.append(len(a[0])))
    config = LutConfig(policy=PlanPolicy(only=["features.2"]), calibration_samples=25)
    convert(model, config, loader)
    assert seen == [10, 10, 5]


def test_config_round_trips_and_validates():
    config = LutConfig(policy=PlanPolicy(num_centroids=32, exclude=["a"]), temperature=0.5)
    data = config.to_dict()
    assert data["version"] == LutConfig.VERSION and data["policy"]["num_centroids"] == 32
    assert LutConfig.from_dict(data) == config
    with pytest.raises(LutTvmError, match="'temperature'"):
        LutConfig(temperature=-1.0)
    with pytest.raises(LutTvmError, match="'batch_size'"):
        LutConfig(batch_size=0)
    with pytest.raises(LutTvmError, match="version 99"):
        LutConfig.from_dict({**data, "version": 99})
    with pytest.raises(LutTvmError, match="unknown field"):
        LutConfig.from_dict({**data, "colour": 1})
    with pytest.raises(PlanError, match="num_centroids"):
        LutConfig.from_dict({**data, "policy": {**data["policy"], "num_centroids": 1}})


def test_convert_needs_calibration_data():
    with pytest.raises(LutTvmError, match="calibration_data"):
        convert(_net(), LutConfig())


class Mixed(nn.Module):
    """Dense, conv and depthwise (grouped) conv layers: LUT-NN covers all; the exact mode no grouped one."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.mix = nn.Conv2d(4, 6, 1)
        self.head = nn.Sequential(nn.Linear(6 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(torch.relu(self.mix(self.depthwise(torch.relu(self.stem(x))))).flatten(1))


def test_select_modules_finds_what_the_compiler_finds(images):
    """One eligibility rule and one naming: the modules convert picks are the layers the compiler's
    discovery finds (a depthwise conv included by both; left out of the exact mode's layers), under
    the same names, with the same weights."""
    from lut_tvm.frontends import import_model  # pylint: disable=import-outside-toplevel
    from lut_tvm.planner import named_layers, select_layers  # pylint: disable=import-outside-toplevel
    from lut_tvm.weights import fingerprint, reduction_length  # pylint: disable=import-outside-toplevel

    torch.manual_seed(1)
    model = Mixed().eval()
    imported = import_model(model, (images[:4],))
    assert [name for name, _ in named_layers(imported)] == ["stem", "mix", "head.0", "head.2"]
    graph = named_layers(imported, grouped=True)
    assert [name for name, _ in graph] == ["stem", "depthwise", "mix", "head.0", "head.2"]
    every = PlanPolicy(skip_first_conv=False, skip_last_dense=False)
    chosen = select_modules(model, every)
    assert [name for name, _, _ in chosen] == [name for name, _ in graph]
    for (name, module, _), (_, site) in zip(chosen, graph):
        centroids = np.zeros((site.groups, 2, reduction_length(site.kind, site.weight.shape)), np.float32)
        if isinstance(module, nn.Conv2d):
            layer = LutConv2d(module.weight, module.bias, centroids, groups=site.groups)
        else:
            layer = LutLinear(module.weight, module.bias, centroids)
        assert fingerprint(layer.canonical_weight()) == site.fingerprint, name
    for policy in (PlanPolicy(), PlanPolicy(exclude=["mix"]), PlanPolicy(only=["stem", "head.2"])):
        assert [n for n, _, _ in select_modules(model, policy)] == [n for n, _ in select_layers(imported, policy)]
