"""The ``lut-tvm`` command line's flags and argument errors, called in-process through
``lut_tvm.cli.main``: plan flags, one-line errors (exit 2) for missing or wrong files and outputs,
checks before any slow import, help texts. The plan -> compile -> run flow: ``test_cli.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import BATCH, DEFAULT_SHAPES, REPO, cli, cli_error, make_files, plan_with

import lut_tvm
from lut_tvm.cli import main

pytestmark = [
    # k-means on a codebook whose sub-vectors are all equal (a dead ReLU channel): benign
    pytest.mark.filterwarnings("ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore:Renaming name:UserWarning"),
]

files = pytest.fixture(scope="module", name="files")(make_files)  # the ONNX CNN and its files


# --------------------------------------------------------------------------- plan flags


def test_plan_sub_len_overrides_one_layer_each(capsys, files):
    shapes, _ = plan_with(capsys, files, "sub_len", "--sub-len", "conv2=8", "--sub-len", "fc1=32")
    assert shapes == {"conv2": (9, 16, 8), "conv3": DEFAULT_SHAPES["conv3"], "fc1": (8, 16, 32)}


def test_plan_only_plans_just_those_layers(capsys, files):
    # --only wins over the default skips: fc2 is the last Linear
    shapes, _ = plan_with(capsys, files, "only", "--only", "conv3", "fc2")
    assert shapes == {"conv3": DEFAULT_SHAPES["conv3"], "fc2": (2, 16, 16)}


def test_plan_exclude_drops_a_layer(capsys, files):
    shapes, _ = plan_with(capsys, files, "exclude", "--exclude", "conv3")
    assert list(shapes) == ["conv2", "fc1"]


def test_plan_num_centroids(capsys, files):
    shapes, plan = plan_with(capsys, files, "k8", "-K", "8")
    assert shapes == {name: (c, 8, v) for name, (c, _, v) in DEFAULT_SHAPES.items()}
    assert plan.provenance["policy"]["num_centroids"] == 8


def test_plan_keep_first_conv_and_last_dense(capsys, files):
    shapes, _ = plan_with(capsys, files, "keep", "--keep-first-conv", "--keep-last-dense",
                          "--sub-len", "conv1=3")
    assert list(shapes) == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    assert shapes["conv1"] == (3, 16, 3)


def test_plan_sub_len_not_dividing_d_exits_2(capsys, files):
    path = files.tmp / "plans" / "bad_sub_len.npz"
    msg = cli_error(capsys, "plan", files.onnx, "--calibration", files.calibration, "-o", path,
                    "--sub-len", "conv2=5")
    assert "'conv2'" in msg and "72" in msg and "V = 5" in msg
    assert not path.exists()


@pytest.mark.parametrize("bad", ["conv2", "conv2=", "conv2=x", "conv2=-3"])
def test_plan_malformed_sub_len_exits_2(capsys, files, bad):
    msg = cli_error(capsys, "plan", files.onnx, "--calibration", files.calibration,
                    "-o", files.tmp / "plans" / "never.npz", "--sub-len", bad)
    assert "--sub-len" in msg and repr(bad) in msg


@pytest.mark.parametrize("flag", [["--only", "conv9"], ["--exclude", "conv9"],
                                  ["--sub-len", "conv9=8"]])
def test_plan_unknown_layer_name_exits_2(capsys, files, flag):
    msg = cli_error(capsys, "plan", files.onnx, "--calibration", files.calibration,
                    "-o", files.tmp / "plans" / "never.npz", *flag)
    assert "conv9" in msg and "conv2" in msg  # names the typo and the model's real layers


# --------------------------------------------------------------------------- errors


def test_error_missing_model(capsys, files):
    missing = files.tmp / "no_such_model.onnx"
    for argv in (["plan", missing, "--calibration", files.calibration], ["compile", missing]):
        msg = cli_error(capsys, *argv)
        assert str(missing) in msg and "does not exist" in msg


def test_error_not_an_onnx_file(capsys, files):
    bogus = files.tmp / "notes.onnx"
    bogus.write_text("this is not a protobuf\n")
    for argv in (["compile", bogus], ["plan", bogus, "--calibration", files.calibration]):
        msg = cli_error(capsys, *argv)
        assert str(bogus) in msg and "not a valid ONNX model" in msg


def test_error_unknown_target(capsys, files):
    msg = cli_error(capsys, "compile", files.onnx, "--target", "riscv-magic",
                    "-o", files.tmp / "never" / "m.so")
    assert "unknown target 'riscv-magic'" in msg and "x86-avx2" in msg
    assert not (files.tmp / "never").exists()


def test_error_missing_plan_or_calibration_file(capsys, files):
    msg = cli_error(capsys, "compile", files.onnx, "--plan", files.tmp / "no_plan.npz")
    assert "no_plan.npz" in msg and "does not exist" in msg
    msg = cli_error(capsys, "plan", files.onnx, "--calibration", files.tmp / "no_calib.npy")
    assert "calibration" in msg and "no_calib.npy" in msg


def test_error_missing_artifact(capsys, files):
    msg = cli_error(capsys, "run", files.tmp / "no_model.so", files.input)
    assert "no_model.so" in msg and "does not exist" in msg


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("command, options", [
    (None, ["plan", "compile", "run", "demo", "--threads", "--verbose"]),
    ("plan", ["--calibration", "--sub-len", "LAYER=V", "--only", "--exclude", "--centroids", "-K",
              "--keep-first-conv", "--keep-last-dense", "--batch", "--output"]),
    ("compile", ["--plan", "--target", "x86-avx512", "--dump-ir", "--example", "--output"]),
    ("run", ["artifact", "inputs", "--time", "--output"]),
    ("demo", ["--out-dir", "--seed"]),
])
def test_help(capsys, monkeypatch, command, options):
    monkeypatch.setenv("COLUMNS", "200")  # no wrapping inside a name like x86-avx512
    monkeypatch.setenv("NO_COLOR", "1")
    argv = ([command] if command else []) + ["--help"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lut-tvm{' ' + command if command else ''}")
    for option in options:
        assert option in out, option



def test_description_landing_on_an_input_is_refused(capsys, files):
    sidecar_input = files.tmp / "lib.so.json"
    sidecar_input.write_text("{}")
    msg = cli_error(capsys, "compile", files.onnx, "--example", sidecar_input, "-o",
                    files.tmp / "lib.so")
    assert "output description" in msg and str(sidecar_input) in msg


def _read_only_folder(tmp_path) -> Path:
    """A folder where files cannot be created (chmod 555; as root, /sys), else skip."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").write_text("x")
    except OSError:
        return folder
    (folder / "probe").unlink()
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            pass
    except OSError:
        return Path("/sys/lut_tvm_test")
    pytest.skip("no folder here refuses new files (root without a read-only mount)")


def test_output_in_a_read_only_folder_fails_before_any_work(capsys, files, tmp_path):
    folder = _read_only_folder(tmp_path)
    for argv in (["compile", files.onnx, "-o", folder / "m.so"],
                 ["plan", files.onnx, "--calibration", files.calibration, "-o", folder / "p.npz"]):
        code, _, err = cli(capsys, *argv)
        assert code == 2, err
        assert err.count("\n") == 1 and "is not writable" in err and str(folder) in err, err
        assert "importing" not in err  # refused before the model was even read


def test_arguments_are_checked_before_importing_tvm(files, tmp_path):
    """A bad argument costs no TVM/torch import (9-23 s): checked in a fresh interpreter."""
    script = ("import sys; from lut_tvm.cli import main; code = main(sys.argv[1:]); "
              "print(code, 'tvm' in sys.modules, 'torch' in sys.modules)")
    text = tmp_path / "calibration.txt"
    text.write_text("0.1 0.2 0.3\n")
    for argv in (["plan", str(files.onnx), "--calibration", str(text)],
                 ["compile", str(files.tmp / "missing.onnx")],
                 ["compile", str(files.onnx), "--tuning-logs", str(tmp_path / "no_logs")],
                 ["plan", str(files.onnx), "--calibration", str(files.calibration), "-o",
                  str(files.calibration)],
                 ["run", str(tmp_path / "missing.so"), str(files.input)],
                 ["bench", str(tmp_path / "missing.so")]):
        proc = subprocess.run([sys.executable, "-c", script, *argv], cwd=REPO, capture_output=True,
                              text=True, timeout=120, check=False)
        assert proc.stdout.split() == ["2", "False", "False"], (argv, proc.stdout, proc.stderr)
        assert proc.stderr.count("\n") == 1 and ": error: " in proc.stderr, proc.stderr


def test_missing_tuning_log_folder(capsys, files, tmp_path):
    folder = tmp_path / "tuning_logz"
    msg = cli_error(capsys, "compile", files.onnx, "--tuning-logs", folder, "-o", tmp_path / "m.so")
    assert str(folder) in msg and "does not exist" in msg
    assert not (tmp_path / "m.so").exists()


def test_corrupt_and_unsupported_pt2(capsys, files, tmp_path):
    good = tmp_path / "cnn.pt2"
    torch.export.save(torch.export.export(files.model, (torch.from_numpy(files.x),)), str(good))
    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(good.read_bytes()[:1000])
    msg = cli_error(capsys, "compile", truncated, "-o", tmp_path / "m.so")
    assert str(truncated) in msg and "corrupt" in msg
    future = tmp_path / "future.pt2"  # as a later torch would write it: archive version 99
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(future, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            dst.writestr(info, b"99" if info.filename.endswith("/archive_version") else data)
    msg = cli_error(capsys, "compile", future, "-o", tmp_path / "m.so")
    assert str(future) in msg and "version 99" in msg

    class Odd(torch.nn.Module):
        def forward(self, x):
            return torch.special.bessel_j0(x)

    odd = tmp_path / "odd.pt2"
    torch.export.save(torch.export.export(Odd(), (torch.from_numpy(files.x),)), str(odd))
    msg = cli_error(capsys, "compile", odd, "-o", tmp_path / "m.so")
    assert str(odd) in msg and "special_bessel_j0" in msg and "AssertionError" not in msg


def test_calibration_of_the_wrong_shape(capsys, files, tmp_path):
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((64, 8, 8), np.float32))  # the channel axis is missing
    msg = cli_error(capsys, "plan", files.onnx, "--calibration", wrong, "-o", tmp_path / "p.npz")
    assert "[64, 8, 8]" in msg and f"[{BATCH}, 1, 8, 8]" in msg
    assert not (tmp_path / "p.npz").exists()


def test_text_files_as_plan_or_calibration(capsys, files, tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("plan: conv2 K=16\n")
    msg = cli_error(capsys, "compile", files.onnx, "--plan", text, "-o", tmp_path / "m.so")
    assert str(text) in msg and "text file" in msg and "pickle" not in msg
    msg = cli_error(capsys, "plan", files.onnx, "--calibration", text, "-o", tmp_path / "p.npz")
    assert str(text) in msg and "text file" in msg and "pickle" not in msg


def test_dynamic_batch_onnx_names_the_flags(capsys, files, tmp_path):
    path = tmp_path / "dynamic.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(files.model, (torch.from_numpy(files.x),), str(path), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    msg = cli_error(capsys, "compile", path, "-o", tmp_path / "m.so")
    assert "--example" in msg and "--batch" in msg and "'x'" in msg


def test_tuning_summary_wording(tmp_path):
    from lut_tvm.cli.compile import _tuning_summary
    from lut_tvm.tuning.logs import AppliedLog

    assert _tuning_summary(None) == "none (default schedule rules)"
    none_matched = _tuning_summary(AppliedLog(tmp_path, 0, 10))
    assert none_matched.startswith("no tuned record matched (0 of 10 functions)")
    assert "(3 of 10 functions tuned)" in _tuning_summary(AppliedLog(tmp_path, 3, 10))


def test_target_as_a_json_dict(capsys, files, tmp_path):
    lib = tmp_path / "haswell.so"
    code, out, err = cli(capsys, "compile", files.onnx, "-q", "--target",
                         '{"kind": "llvm", "mcpu": "haswell"}', "-o", lib)
    assert code == 0, err
    assert err == ""  # -q: no progress lines
    assert json.loads(json.loads(lib.with_name("haswell.so.json").read_text())["target"])["mcpu"] == "haswell"
    assert "target: llvm mcpu=haswell" in out
    msg = cli_error(capsys, "compile", files.onnx, "--target", '{"mcpu": "haswell"}', "-o", lib)
    assert "'kind'" in msg


def test_plan_large_error_points_to_training(capsys, files):
    """K = 2 centroids of long sub-vectors lose much of a layer's output: the plan says so and
    where to go next."""
    path = files.tmp / "plans" / "k2.npz"
    code, out, err = cli(capsys, "plan", files.onnx, "--calibration", files.calibration, "-K", 2,
                         "--dense-sub-len", 64, "--max-rows", 512, "-o", path)
    assert code == 0, err
    errors = lut_tvm.Plan.load(path).provenance["reconstruction_error"]
    large = [name for name, error in errors.items() if error > 0.3]
    assert large, errors
    hint = re.search(r"^layer\(s\) (.+) lose more than 30% .*lut_tvm\.train", out, re.MULTILINE)
    assert hint and hint.group(1).split(", ") == large, out
