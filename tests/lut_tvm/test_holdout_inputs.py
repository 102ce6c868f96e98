"""Mistakes a user makes with models the tests never saw: each gives one clear error line (exit 2)
naming the file, input or layer, before or instead of a failure deep inside TVM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_support import cli, cli_error
from torch import nn

from lut_tvm.errors import ModelLoadError
from lut_tvm.frontends import import_model

FEATURES = 12


class LayerNormMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(FEATURES, 32)
        self.ln = nn.LayerNorm(32)
        self.b = nn.Linear(32, 5)

    def forward(self, x):
        return self.b(nn.functional.gelu(self.ln(self.a(x))))


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory):
    """An MLP exported to ONNX with a dynamic batch (input 'input' of shape [batch, 12])."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("holdout")
    path = tmp / "mlp.onnx"
    torch.onnx.export(LayerNormMLP().eval(), (torch.zeros(4, FEATURES),), str(path), dynamo=False,
                      input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    return path


def test_example_of_wrong_width_names_the_onnx_input(dynamic_onnx):
    with pytest.raises(ModelLoadError) as err:
        import_model(dynamic_onnx, (np.zeros((8, FEATURES - 2), np.float32),))
    message = str(err.value)
    assert "input 'input' is [batch, 12]" in message and "[8, 10]" in message, message
    with pytest.raises(ModelLoadError, match=r"\[batch, 12\].*\[8, 1, 12\]"):
        import_model(dynamic_onnx, (np.zeros((8, 1, FEATURES), np.float32),))


def test_example_of_right_width_imports_at_its_batch(dynamic_onnx):
    imported = import_model(dynamic_onnx, (np.zeros((3, FEATURES), np.float32),))
    assert imported.input_shapes == [(3, FEATURES)]


def test_dynamic_shape_message_shows_plain_dims(dynamic_onnx):
    with pytest.raises(ModelLoadError) as err:
        import_model(dynamic_onnx)
    assert "[batch, 12]" in str(err.value) and "T.int64" not in str(err.value), str(err.value)


def test_plan_with_calibration_of_wrong_width(capsys, dynamic_onnx, tmp_path):
    calibration = tmp_path / "calib.npy"
    np.save(calibration, np.random.default_rng(0).random((64, FEATURES + 3), dtype=np.float32))
    line = cli_error(capsys, "plan", dynamic_onnx, "--calibration", calibration, "--batch", 16,
                     "-o", tmp_path / "plan.npz")
    assert "input 'input' is [batch, 12]" in line and "[16, 15]" in line, line


def test_quantize_of_dynamic_batch_onnx_hints_the_example(capsys, dynamic_onnx, tmp_path):
    calibration = tmp_path / "calib.npy"
    np.save(calibration, np.random.default_rng(1).random((32, FEATURES), dtype=np.float32))
    code, out, err = cli(capsys, "quantize", dynamic_onnx, "--calibration", calibration, "--batch", 8,
                         "-o", tmp_path / "exact.npz", "-q")
    assert code == 0, err
    hint = out.strip().splitlines()[-1]
    assert hint.endswith(f"--plan {tmp_path / 'exact.npz'} --example X.npy`"), hint
    line = cli_error(capsys, "compile", dynamic_onnx, "--plan", tmp_path / "exact.npz",
                     "-o", tmp_path / "m.so")
    assert "--example X.npy" in line, line


@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_empty_model_file(tmp_path, suffix):
    empty = tmp_path / f"model{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"model\.(onnx|pt2)' is empty \(0 bytes\)"):
        import_model(empty, (np.zeros((2, FEATURES), np.float32),))


@pytest.mark.parametrize("command", ["run", "bench"])
def test_run_given_the_model_instead_of_the_library(capsys, dynamic_onnx, tmp_path, command):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((4, FEATURES), np.float32))
    extra = ["-o", tmp_path / "y.npy"] if command == "run" else []
    line = cli_error(capsys, command, dynamic_onnx, x, *extra)
    assert "is a model file, not a compiled model: compile it first" in line, line


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(FEATURES, 16, bias=False)

    def forward(self, x):
        return torch.relu(self.proj(x))


class NoBias(nn.Module):
    """A Linear without bias inside a submodule: torch.onnx names its weight ``onnx::MatMul_N``."""

    def __init__(self):
        super().__init__()
        self.blk = Block()
        self.out = nn.Linear(16, 5)

    def forward(self, x):
        return self.out(self.blk(x))


def test_onnx_linear_without_bias_keeps_its_pytorch_name(tmp_path):
    from lut_tvm.planner import layer_name
    from relay_passes.layer_sites import unique_layer_sites

    torch.manual_seed(0)
    model, x = NoBias().eval(), torch.zeros(2, FEATURES)
    torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), dynamo=False)
    torch.export.save(torch.export.export(model, (x,)), str(tmp_path / "m.pt2"))
    for path in (tmp_path / "m.onnx", tmp_path / "m.pt2"):
        imported = import_model(path)
        names = [layer_name(imported, site, i)
                 for i, (_, site) in enumerate(unique_layer_sites(imported.mod["main"]))]
        assert names == ["blk.proj", "out"], (path.name, names)


@pytest.mark.parametrize("command", ["plan", "quantize"])
def test_calibration_with_nan_names_the_file(capsys, dynamic_onnx, tmp_path, command):
    samples = np.random.default_rng(2).random((32, FEATURES), dtype=np.float32)
    samples[3, 4] = np.nan
    samples[5, 0] = np.inf
    calibration = tmp_path / "calib.npy"
    np.save(calibration, samples)
    line = cli_error(capsys, command, dynamic_onnx, "--calibration", calibration, "--batch", 8,
                     "-o", tmp_path / "p.npz")
    assert f"calibration file {str(calibration)!r} holds 2 NaN/infinite value(s) of 384" in line, line


def test_layer_whose_default_v_does_not_divide_d_stays_dense(caplog):
    """A Linear of 13 inputs under the default V = 16 stays dense in the planner and in
    train.convert (one warning naming it and the flag), the other layers are planned; a V set
    for it by name that does not divide D is still an error naming the flags."""
    import logging

    import torch
    from torch import nn

    from lut_tvm.errors import PlanError
    from lut_tvm.frontends import import_model
    from lut_tvm.planner import select_layers
    from lut_tvm.policy import PlanPolicy
    from lut_tvm.train.convert import select_modules

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(13, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    imported = import_model(model, (np.zeros((8, 13), np.float32),))
    every = PlanPolicy(skip_last_dense=False)
    with caplog.at_level(logging.WARNING, logger="lut_tvm"):
        assert [name for name, _ in select_layers(imported, every)] == ["2", "4"]
    assert "layer 0 (dense) stays dense: V = 16 does not divide its reduction length D = 13" in caplog.text
    assert "--sub-len 0=V" in caplog.text
    assert [name for name, _, _ in select_modules(model, every)] == ["2", "4"]
    fitting = PlanPolicy(skip_last_dense=False, sub_len_overrides={"0": 13})
    assert [name for name, _ in select_layers(imported, fitting)] == ["0", "2", "4"]
    with pytest.raises(PlanError, match=r"'0'.*not a multiple of V = 4.*--sub-len 0=V.*--exclude 0"):
        PlanPolicy(sub_len_overrides={"0": 4}).checked_sub_len("0", select_layers(imported, every)[0][1].kind, (13, 32))


def test_pt2_model_exports_to_onnx_for_the_peer_rows(tmp_path):
    """optimize's ONNX Runtime rows of a .pt2 model: the program (which refuses train()) is exported
    to ONNX and runs like the original module."""
    import torch
    from torch import nn

    ort = pytest.importorskip("onnxruntime")
    from lut_tvm.peers import onnx_of

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = np.random.default_rng(0).random((4, 8), dtype=np.float32)
    torch.export.save(torch.export.export(model, (torch.from_numpy(x),)), tmp_path / "m.pt2")
    path = onnx_of(tmp_path / "m.pt2", x, tmp_path)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
