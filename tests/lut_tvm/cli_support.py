"""What the ``lut-tvm`` command-line tests share: the small ONNX CNN and its files (``make_files``,
each test module's ``files`` fixture), and calling ``lut_tvm.cli.main`` in-process (``cli``, ``cli_error``)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from small_models import CNN, export_onnx, seeded

import lut_tvm
from lut_tvm.cli import main

REPO = Path(__file__).resolve().parents[2]
BATCH = 16  # the ONNX model's static batch
NUM_CALIBRATION = 256  # a multiple of BATCH
EXPECTED_LUT = ["conv2", "conv3", "fc1"]  # conv1 (first conv) and fc2 (last Linear) stay dense
# default-policy centroids [C, K, V]: conv2 D=8*3*3, V=3*3; conv3 (1x1) D=16, V=4; fc1 D=256, V=16
DEFAULT_SHAPES = {"conv2": (8, 16, 9), "conv3": (4, 16, 4), "fc1": (16, 16, 16)}


def call(*argv):
    """``main(argv)`` with stdout/stderr captured here (for module fixtures, where capsys is not)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def cli(capsys, *argv):
    """``(exit code, stdout, stderr)`` of ``lut-tvm argv...`` run in-process."""
    capsys.readouterr()  # drop anything printed before
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_error(capsys, *argv) -> str:
    """Run a command that must fail: exit 2, one ``lut-tvm <cmd>: error: ...`` line (after the
    progress lines of the stages that ran, ``lut-tvm <cmd>: <stage>``), no traceback."""
    code, out, err = cli(capsys, *argv)
    command = next(a for a in map(str, argv) if not a.startswith("-"))
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"lut-tvm {command}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert all(line.startswith(f"lut-tvm {command}: ") for line in lines), err
    assert "Traceback" not in err
    return lines[-1]


def make_files(tmp_path_factory):
    """The ONNX CNN, another CNN (same architecture, other weights), calibration and input .npy."""
    from sklearn.datasets import load_digits

    tmp = tmp_path_factory.mktemp("cli")
    images = (load_digits().images / 16.0).astype(np.float32)[:, None]  # [1797, 1, 8, 8]
    model = seeded(CNN, 3)
    x = images[1000 : 1000 + BATCH]
    f = SimpleNamespace(tmp=tmp, model=model, x=x)
    f.onnx = export_onnx(model, x, tmp / "cnn.onnx")
    f.other_onnx = export_onnx(seeded(CNN, 4), x, tmp / "other.onnx")
    f.calibration = tmp / "calibration.npy"
    np.save(f.calibration, images[:NUM_CALIBRATION])
    f.input = tmp / "x.npy"
    np.save(f.input, x)
    return f


def plan_with(capsys, files, name, *flags):
    """A plan made by ``lut-tvm plan`` with extra flags (few k-means rows, for speed)."""
    path = files.tmp / "plans" / f"{name}.npz"
    code, out, err = cli(capsys, "plan", files.onnx, "--calibration", files.calibration,
                         "--max-rows", 512, "-o", path, *flags)
    assert code == 0, err
    assert f"wrote {path}" in out
    plan = lut_tvm.Plan.load(path)
    return {layer.name: layer.centroids.shape for layer in plan.layers}, plan
