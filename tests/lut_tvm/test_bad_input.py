"""Bad input gets a LutTvmError subclass whose message names the file, layer, field or input
at fault, not a NumPy/TVM traceback."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import lut_tvm
from lut_tvm import ArtifactError, LutTvmError, ModelLoadError, PlanError, TargetError


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(32, 16)
        self.fc2 = nn.Linear(16, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _tiny(seed):
    torch.manual_seed(seed)
    return Tiny().eval()


X = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return _tiny(0)


@pytest.fixture(scope="module")
def plan(model):
    calibration = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)
    plan = lut_tvm.build_kmeans_plan(model, calibration)
    assert [layer.name for layer in plan.layers] == ["fc1"]
    return plan


@pytest.fixture(scope="module")
def compiled(model):
    return lut_tvm.compile(model, None, example_inputs=(X,))


def _raises(exc_type, func, *args, **kwargs) -> str:
    """Run ``func``, check it raises ``exc_type`` (a LutTvmError); return the message."""
    assert issubclass(exc_type, LutTvmError)
    with pytest.raises(exc_type) as info:
        func(*args, **kwargs)
    return str(info.value)


def test_plan_for_another_model(plan):
    other = _tiny(1)  # same architecture, other weights
    message = _raises(PlanError, lut_tvm.compile, other, plan, example_inputs=(X,))
    assert "'fc1'" in message
    assert "another model" in message


def test_plan_with_wrong_centroid_shape(model, plan):
    layer = plan.layers[0]
    num_codebooks, num_centroids, sub_len = layer.centroids.shape
    # C*V = 2*8 = 16, but fc1 reduces over D = 32
    wrong = np.ascontiguousarray(layer.centroids[:, :, : sub_len // 2])
    bad = lut_tvm.Plan([dataclasses.replace(layer, centroids=wrong)])
    message = _raises(PlanError, lut_tvm.compile, model, bad, example_inputs=(X,))
    assert "'fc1'" in message
    assert "centroids" in message
    # the good plan still compiles (the error is the shape, not the plan)
    assert lut_tvm.compile(model, plan, example_inputs=(X,)).info.lut_layers == ["fc1"]


def test_plan_file_with_wrong_centroid_shape(plan, tmp_path):
    """Same through a plan file: the loader names the file, the layer and the field."""
    path = plan.save(tmp_path / "plan.npz")
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["layer0.centroids"] = np.ascontiguousarray(arrays["layer0.centroids"][:, :, :8])
    np.savez(path, **arrays)
    message = _raises(PlanError, lut_tvm.Plan.load, path)
    assert str(path) in message and "'fc1'" in message and "centroids" in message


def test_unknown_target(model):
    message = _raises(TargetError, lut_tvm.compile, model, None, target="riscv-v",
                      example_inputs=(X,))
    assert "riscv-v" in message
    for name in ("x86-avx2", "x86-avx512", "arm64", "native"):
        assert name in message


def test_missing_model_file(tmp_path):
    path = tmp_path / "nowhere" / "model.onnx"
    message = _raises(ModelLoadError, lut_tvm.compile, str(path), None, example_inputs=(X,))
    assert str(path) in message


def test_onnx_file_that_is_not_onnx(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x00\xffthis is not a protobuf\x13\x37" * 16)
    message = _raises(ModelLoadError, lut_tvm.compile, str(path), None, example_inputs=(X,))
    assert str(path) in message


def test_wrong_input_shape(compiled):
    (name,) = compiled.info.input_names
    message = _raises(ArtifactError, compiled, np.zeros((3, 32), np.float32))
    assert repr(name) in message
    assert "[3, 32]" in message and "[4, 32]" in message
    # the right shape runs
    assert compiled(X).shape == (4, 8)


def test_wrong_number_of_inputs(compiled):
    message = _raises(ArtifactError, compiled, X, X)
    assert compiled.info.input_names[0] in message


def test_load_missing_artifact(tmp_path):
    path = tmp_path / "missing.so"
    message = _raises(ArtifactError, lut_tvm.load, path)
    assert str(path) in message


def test_load_artifact_without_its_description(compiled, tmp_path):
    path = compiled.export(tmp_path / "model.so")
    sidecar = path.with_name(path.name + ".json")
    sidecar.unlink()
    message = _raises(ArtifactError, lut_tvm.load, path)
    assert str(sidecar) in message
