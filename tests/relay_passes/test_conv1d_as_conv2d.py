"""Conv1dAsConv2d: conv1d becomes expand_dims -> height-1 conv2d -> squeeze (structurally), so a torch
Conv1d model imported through torch.export or ONNX compiles dense equal to torch, a ``convert_conv1d``
plan binds to and compiles its conv1d layers as LUTs equal to the NumPy reference run with the
compiled codes, and ``lut_tvm.optimize`` considers the conv1d layers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

import lut_tvm
from lut_tvm.compiler import layer_sites
from lut_tvm.frontends import import_model
from lut_tvm.plan import TableQuant
from lut_tvm.policy import PlanPolicy
from lut_tvm.testing import compile_with_codes, forward_given_codes, op_calls, relax_module
from lut_tvm.train import LutConfig, export_plan, to_dense_model
from lut_tvm.train.conv1d import convert_with_conv1d
from lut_tvm.weights import LayerKind, fingerprint
from relay_passes.conv1d_as_conv2d import Conv1dAsConv2d

pytestmark = [pytest.mark.filterwarnings("ignore:Renaming name:UserWarning"),
              pytest.mark.filterwarnings("ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning")]

TOL = dict(rtol=1e-5, atol=1e-5)
SEED = 0


def test_conv1d_becomes_height_one_conv2d_structurally():
    weight = np.random.default_rng(0).standard_normal((6, 4, 3)).astype(np.float32)
    before = relax_module((2, 4, 20), lambda bb, x: relax.op.nn.conv1d(
        x, relax.const(weight), strides=2, padding=(1, 2), dilation=2))

    def expected_body(bb, x):
        wide = bb.emit(relax.op.expand_dims(x, axis=2))
        conv = bb.emit(relax.op.nn.conv2d(wide, relax.const(weight[:, :, None, :]), strides=(1, 2),
                                          padding=(0, 1, 0, 2), dilation=(1, 2)))
        return relax.op.squeeze(conv, axis=[2])

    tvm.ir.assert_structural_equal(Conv1dAsConv2d()(before), relax_module((2, 4, 20), expected_body))


def test_non_constant_weight_is_expanded_in_the_graph():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 9), "float32"))
    w = relax.Var("w", relax.TensorType((5, 3, 3), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv1d(x, w, padding=1))
        bb.emit_func_output(out)
    after = Conv1dAsConv2d()(bb.get())
    assert not op_calls(after, "relax.nn.conv1d")
    (conv,) = op_calls(after, "relax.nn.conv2d")
    assert [int(d) for d in conv.args[1].ty.shape.values] == [5, 3, 1, 3]
    assert len(op_calls(after, "relax.expand_dims")) == 2


def test_grouped_conv1d_is_left_alone():
    before = relax_module((1, 4, 9), lambda bb, x: relax.op.nn.conv1d(
        x, relax.const(np.ones((4, 2, 3), np.float32)), groups=2))
    tvm.ir.assert_structural_equal(Conv1dAsConv2d()(before), before)


class Net1d(nn.Module):
    """Conv1d layers with stride, padding and dilation, then two Linears."""

    def __init__(self, width: int = 16, length: int = 24, classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(2, width, 5, padding=2), nn.ReLU(),
                                      nn.Conv1d(width, width, 3, padding=1, stride=2), nn.ReLU(),
                                      nn.Conv1d(width, width, 3, padding=2, dilation=2), nn.ReLU())
        self.fc1 = nn.Linear(width * length // 2, 32)
        self.fc2 = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.features(x).flatten(1))))


def _signals(count: int, seed: int, length: int = 24):
    """Two-channel noisy sines; the label is which of 4 frequencies (a task the net learns quickly)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, count)
    t = np.arange(length, dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi, (count, 1))
    freq = (1 + labels[:, None]) * np.pi / 12
    x = np.stack([np.sin(freq * t + phase), np.cos(freq * t + phase)], 1)
    x = x + 0.3 * rng.standard_normal(x.shape)
    return x.astype(np.float32), labels.astype(np.int64)


def _trained_net() -> nn.Module:
    torch.manual_seed(SEED)
    model = Net1d()
    x, y = _signals(512, SEED)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(6):
            for start in range(0, len(x), 64):
                opt.zero_grad()
                nn.functional.cross_entropy(model(torch.from_numpy(x[start:start + 64])),
                                            torch.from_numpy(y[start:start + 64])).backward()
                opt.step()
    finally:
        torch.set_num_threads(before)
    return model.eval()


@pytest.fixture(scope="module")
def net():
    return _trained_net()


def _onnx(model, x, path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), str(path), dynamo=False)
    return str(path)


@pytest.fixture(scope="module", params=["torch", "onnx"])
def frontend(request):
    return request.param


def _source(model, x, frontend, tmp_path):
    return model if frontend == "torch" else _onnx(model, x, tmp_path / "net1d.onnx")


def test_conv1d_layers_are_conv2d_sites_named_as_the_model(net, frontend, tmp_path):
    x, _ = _signals(4, 1)
    imported = import_model(_source(net, x, frontend, tmp_path), (x,))
    convs = [s for s in layer_sites(imported) if s.kind is LayerKind.CONV2D]
    weights = [net.features[i].weight.detach().numpy() for i in (0, 2, 4)]
    assert [s.fingerprint for s in convs] == [fingerprint(w[:, :, None, :]) for w in weights]
    assert [s.geometry.strides for s in convs] == [(1, 1), (1, 2), (1, 1)]
    assert [s.geometry.padding for s in convs] == [(0, 2, 0, 2), (0, 1, 0, 1), (0, 2, 0, 2)]
    assert convs[2].geometry.dilation == (1, 2)
    if frontend == "torch":  # the model's own names (ONNX initializers may be renamed)
        assert [imported.weight_names[s.fingerprint] for s in convs] == [f"features.{i}.weight" for i in (0, 2, 4)]


def test_dense_compile_equals_torch(net, frontend, tmp_path):
    x, _ = _signals(8, 2)
    compiled = lut_tvm.compile(_source(net, x, frontend, tmp_path), None, example_inputs=(x,), tuning_logs=False)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(compiled(x), want, **TOL)


@pytest.fixture(scope="module")
def converted(net):
    """``(LUT model, its plan, its dense model)``: features.2, features.4 (conv1d) and fc1 as LUTs."""
    calibration, _ = _signals(256, 3)
    lut = convert_with_conv1d(net, LutConfig(policy=PlanPolicy(seed=SEED, max_rows=1024)), calibration)
    return lut, export_plan(lut), to_dense_model(lut)


def test_exported_conv1d_plan_compiles_to_the_reference(converted, frontend, tmp_path):
    lut, plan, dense = converted
    assert [(l.name, l.kind, l.weight_shape) for l in plan.layers][:2] == [
        ("features.2", LayerKind.CONV2D, (16, 16, 1, 3)), ("features.4", LayerKind.CONV2D, (16, 16, 1, 3))]
    x, _ = _signals(8, 4)
    source = _source(dense, x, frontend, tmp_path)
    tapped = compile_with_codes(source, plan, example_inputs=(x,), tuning_logs=False)
    y, codes = tapped(x)
    assert sorted(tapped.compiled.info.lut_layers) == sorted(l.name for l in plan.layers)
    assert len(codes) == 3
    np.testing.assert_allclose(y, forward_given_codes(lut, x, codes), **TOL)
    with torch.no_grad():  # the comparison tells LUT from dense
        assert np.abs(dense(torch.from_numpy(x)).numpy() - y).max() > 1e-3


def test_optimize_considers_conv1d_layers(net, tmp_path):
    calibration, _ = _signals(256, 5)
    x_eval, y_eval = _signals(128, 6)
    result = lut_tvm.optimize(net, calibration, x_eval, y_eval, budget=2.0, cache_dir=tmp_path, batch=32,
                              sub_lens=(4, 8), timing_number=3, timing_repeat=2, max_rows=512, seed=SEED,
                              table_quants=(TableQuant.INT8_PER_LAYER,))
    by_name = {row["layer"]: row for row in result.report["layers"]}
    for index in (2, 4):  # D = 16 * 3: V = 4 and 8 both divide it
        assert by_name[f"features.{index}"]["shape"] == "conv2d 16x16x1x3"
        tried = {c["sub_len"] for c in result.report["candidates"] if c["layer"] == f"features.{index}"}
        assert tried == {4, 8}
    assert result.report["original_metric"] - result.report["chosen_metric_compiled"] <= 2.0
