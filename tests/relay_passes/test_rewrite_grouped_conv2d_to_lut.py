"""RewriteGroupedConv2dToLUT end to end: grouped (G = 2, 4) and depthwise (G = C_in) LUT convs
through torch.export and ONNX equal the NumPy reference run with the compiled model's codes; the
planner plans a depthwise-separable model; train.convert round-trips one through export_plan."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import lut_tvm
from lut_tvm import reference as ref
from lut_tvm.plan import LayerPlan, Plan, TableQuant
from lut_tvm.testing import check_codes, compile_with_codes
from lut_tvm.weights import LayerKind, fingerprint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lut_tvm"))
from small_models import LUT_TOL, export_onnx  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = [
    pytest.mark.filterwarnings("ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore:Renaming name:UserWarning"),
]

# (name, in channels, out channels, groups, kernel, stride, padding, V)
LAYERS = [
    ("g2", 6, 8, 2, 3, 1, 1, 9),
    ("g4", 8, 12, 4, 3, 2, 1, 6),
    ("depthwise", 8, 8, 8, 3, 1, 1, 9),
    ("depthwise_x2", 4, 8, 4, 3, 1, 0, 3),
    # O % 16 == 0: where the target has a byte shuffle, the block-diagonal lowering
    ("g2_wide", 8, 16, 2, 3, 1, 1, 9),
    ("depthwise16", 16, 16, 16, 3, 1, 1, 9),
]


def _conv_case(name, c_in, c_out, groups, k, stride, padding, v, granularity="int8_per_layer"):
    torch.manual_seed(len(name) + groups)
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, groups=groups).eval()
    weight = conv.weight.detach().numpy()
    rng = np.random.default_rng(groups)
    x = rng.standard_normal((2, c_in, 7, 7)).astype(np.float32)
    centroids = rng.standard_normal((c_in * k * k // v, 16, v)).astype(np.float32)
    layer = LayerPlan(name, LayerKind.CONV2D, weight.shape, fingerprint(weight), centroids,
                      table_quant=granularity, groups=groups)
    return conv, x, Plan([layer])


@pytest.mark.parametrize("frontend", ["torch", "onnx"])
@pytest.mark.parametrize("spec", LAYERS, ids=[s[0] for s in LAYERS])
def test_grouped_lut_conv_equals_reference_given_codes(spec, frontend, tmp_path):
    name, c_in, c_out, groups, k, stride, padding, v = spec
    granularity = "int8_per_column" if groups in (4, 16) else "int8_per_layer"
    conv, x, plan = _conv_case(*spec, granularity=granularity)
    source = conv if frontend == "torch" else str(export_onnx(conv, x, tmp_path / f"{name}.onnx"))
    tapped = compile_with_codes(source, plan, example_inputs=(x,))
    y, codes = tapped(x)
    assert len(codes) == 1, "the grouped conv did not become a LUT layer"
    layer = plan.layers[0]
    rows, (batch, out_h, out_w) = ref.im2col_nchw(x, (k, k), stride, padding)
    check_codes(codes[0], rows, layer.centroids, name)
    expected = ref.lut_grouped_output(codes[0], layer.centroids, conv.weight.detach().numpy(), groups,
                                      conv.bias.detach().numpy(), TableQuant(layer.table_quant).granularity)
    expected = expected.reshape(batch, out_h, out_w, c_out).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(y, expected, **LUT_TOL)
    # the LUT is visible: the compiled layer is not the dense conv
    assert np.abs(y - conv(torch.from_numpy(x)).detach().numpy()).max() > 1e-3


def test_plan_layer_groups_must_match_the_models_conv():
    conv, x, plan = _conv_case(*LAYERS[0])
    plan.layers[0].groups = 1  # the weight [8, 3, 3, 3] is then read as an ungrouped conv's
    plan.layers[0].centroids = plan.layers[0].centroids[:3]
    with pytest.raises(lut_tvm.errors.PlanError, match="'groups' is 1, but the model's conv has groups = 2"):
        lut_tvm.compile(conv, plan, example_inputs=(x,))


class Separable(nn.Module):
    """A MobileNet-style block: stem conv, depthwise 3x3, pointwise 1x1, grouped 3x3, classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.gc = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.fc = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.dw(x))
        x = torch.relu(self.pw(x))
        x = torch.relu(self.gc(x))
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return (load_digits().images / 16.0).astype(np.float32)[:, None]


def test_planner_plans_a_depthwise_separable_model(digits):
    torch.manual_seed(0)
    model = Separable().eval()
    x = digits[1000:1008]
    plan = lut_tvm.build_kmeans_plan(model, digits[:128], example_inputs=(x,))
    layers = {layer.name: layer for layer in plan.layers}
    assert sorted(layers) == ["dw", "gc", "pw"]  # stem and classifier stay dense (default policy)
    assert (layers["dw"].groups, layers["dw"].centroids.shape) == (8, (8, 16, 9))
    assert (layers["gc"].groups, layers["gc"].centroids.shape) == (4, (16, 16, 36 // 4))
    assert layers["pw"].groups == 1
    compiled = lut_tvm.compile(model, plan, example_inputs=(x,))
    assert compiled.info.lut_layers == ["dw", "pw", "gc"]
    y = compiled(x)
    dense = model(torch.from_numpy(x)).detach().numpy()
    assert np.abs(y - dense).max() > 1e-4  # LUTs, not the dense convs...
    cosine = (y * dense).sum() / np.linalg.norm(y) / np.linalg.norm(dense)
    assert cosine > 0.9  # ...that still approximate them


def test_train_convert_round_trip_compiles_to_the_hard_forward(digits, tmp_path):
    from lut_tvm.train import LutConfig, convert, export_plan, to_dense_model
    from lut_tvm.train.layers import LutConv2d

    torch.manual_seed(1)
    model = Separable().eval()
    lut_model = convert(model, LutConfig(), torch.from_numpy(digits[:128])).eval()
    grouped = {n: m.groups for n, m in lut_model.named_modules() if isinstance(m, LutConv2d)}
    assert grouped == {"dw": 8, "pw": 1, "gc": 4}
    plan = Plan.load(export_plan(lut_model, tmp_path / "plan.npz").save(tmp_path / "plan.npz"))
    assert {layer.name: layer.groups for layer in plan.layers} == grouped
    dense = to_dense_model(lut_model)
    assert dense.dw.groups == 8 and dense.gc.groups == 4
    x = digits[1000:1016]
    with torch.no_grad():
        hard = lut_model(torch.from_numpy(x)).numpy()
    y = lut_tvm.compile(dense, plan, example_inputs=(x,))(x)
    # Samples whose codes tie at float rounding may differ; all others are the hard forward.
    close = np.isclose(y, hard, rtol=1e-4, atol=1e-4).all(axis=1)
    assert close.mean() >= 0.9, f"only {close.sum()} of {len(x)} samples equal the torch hard forward"


def test_grouped_conv_whose_v_does_not_fit_stays_dense(digits):
    """A ShuffleNet-style grouped 1x1 conv (2 channels per group: D = 2 < the 1x1 default V = 4)
    stays dense in the planner and in train.convert alike, unless its V is set by name."""
    from lut_tvm.frontends import import_model
    from lut_tvm.planner import select_layers
    from lut_tvm.policy import PlanPolicy
    from lut_tvm.train.convert import select_modules

    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 1, groups=4), nn.Conv2d(8, 8, 3, groups=8))
    imported = import_model(model, (digits[:2],))
    every = PlanPolicy(skip_first_conv=False)
    assert [name for name, _ in select_layers(imported, every)] == ["0", "2"]
    assert [name for name, _, _ in select_modules(model, every)] == ["0", "2"]
    override = PlanPolicy(skip_first_conv=False, sub_len_overrides={"1": 2})
    assert [name for name, _ in select_layers(imported, override)] == ["0", "1", "2"]
    assert [name for name, _, _ in select_modules(model, override)] == ["0", "1", "2"]


@pytest.mark.parametrize("granularity", ["int8_per_layer", "int8_per_column"])
@pytest.mark.parametrize("with_tables", [False, True])
def test_block_diagonal_tables_quantize_as_the_grouped_ones(granularity, with_tables):
    """The block-diagonal lowering's INT8 tables and scales are the compact grouped ones, zero elsewhere."""
    from lut_tvm._tvm_compat import constant_value
    from relay_passes.layer_sites import LayerSite
    from relay_passes.lut_layer_builder import LutLayerConstants
    from relay_passes.rewrite_grouped_conv2d_to_lut import GroupedLutConstants, block_diagonal_layer
    from schedules.lut_compute import Conv2dGeometry

    conv, _, plan = _conv_case(*LAYERS[4], granularity=granularity)
    layer, groups = plan.layers[0], 2
    if with_tables:
        layer.tables = np.random.default_rng(5).standard_normal((8, 16, 8)).astype(np.float32)
    weight = conv.weight.detach().numpy()
    site = LayerSite(LayerKind.CONV2D, weight, fingerprint(weight), (1, 8, 7, 7), Conv2dGeometry((3, 3)), groups)
    compact = GroupedLutConstants(site, layer)
    full = LutLayerConstants(*block_diagonal_layer(site, layer))
    tables_q = constant_value(compact.table)  # [C, K, O/G]
    for group in range(groups):
        books, outs = slice(group * 4, group * 4 + 4), slice(group * 8, group * 8 + 8)
        np.testing.assert_array_equal(full.tables_q[books, :, outs], tables_q[books])
        others = np.delete(full.tables_q[books], np.arange(group * 8, group * 8 + 8), axis=2)
        assert not others.any()
    np.testing.assert_array_equal(constant_value(full.scale), constant_value(compact.scale))
