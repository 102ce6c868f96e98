"""The ``lut-tvm`` command line, called in-process through ``lut_tvm.cli.main`` (and once as a
subprocess): plan -> compile -> run on a small ONNX CNN, checked against the Python API and the
NumPy reference; the errors and output lines of those artifacts. Flags, argument errors and help
texts: ``test_cli_args.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from cli_support import (BATCH, DEFAULT_SHAPES, EXPECTED_LUT, NUM_CALIBRATION, REPO, call, cli, cli_error,
                         make_files)
from small_models import assert_matches_reference, cnn_reference

import lut_tvm
from lut_tvm.testing import compile_with_codes

pytestmark = [
    # k-means on a codebook whose sub-vectors are all equal (a dead ReLU channel): benign
    pytest.mark.filterwarnings("ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore:Renaming name:UserWarning"),
]

files = pytest.fixture(scope="module", name="files")(make_files)  # the ONNX CNN and its files


@pytest.fixture(scope="module")
def default_plan(files):
    path = files.tmp / "plans" / "default.npz"
    code, out, err = call("plan", files.onnx, "--calibration", files.calibration, "-o", path)
    assert code == 0, err
    return SimpleNamespace(path=path, out=out, err=err)


@pytest.fixture(scope="module")
def cli_compiled(files, default_plan):
    """``lut-tvm compile cnn.onnx --plan default.npz --dump-ir ir -o build/model.so``."""
    lib = files.tmp / "build" / "model.so"
    ir_dir = files.tmp / "ir"
    code, out, err = call("compile", files.onnx, "--plan", default_plan.path, "-o", lib,
                           "--dump-ir", ir_dir)
    assert code == 0, err
    return SimpleNamespace(lib=lib, ir_dir=ir_dir, out=out, err=err)


@pytest.fixture(scope="module")
def api_output(files, default_plan):
    """The Python API on the same model, plan and input."""
    compiled = lut_tvm.compile(str(files.onnx), str(default_plan.path))
    assert compiled.info.lut_layers == EXPECTED_LUT
    return compiled(files.x)


# --------------------------------------------------------------------------- plan


def test_plan_default_writes_loadable_plan(files, default_plan):
    plan = lut_tvm.Plan.load(default_plan.path)
    assert [layer.name for layer in plan.layers] == EXPECTED_LUT
    for layer in plan.layers:
        layer.validate()
        assert layer.centroids.shape == DEFAULT_SHAPES[layer.name], layer.name
    assert plan.provenance["samples"] == NUM_CALIBRATION
    # the summary names every planned layer and the file
    listed = re.findall(r"^\s+(\w+)\s+(conv2d|dense)\b", default_plan.out, re.M)
    assert [name for name, _ in listed] == EXPECTED_LUT
    assert f"wrote {default_plan.path} (3 LUT layers)" in default_plan.out


# --------------------------------------------------------------------------- compile / run


def test_compile_writes_library_and_description(files, cli_compiled):
    assert cli_compiled.lib.is_file() and cli_compiled.lib.stat().st_size > 0
    meta = json.loads(cli_compiled.lib.with_name("model.so.json").read_text())
    assert meta["lut_layers"] == EXPECTED_LUT
    assert meta["input_shapes"] == [[BATCH, 1, 8, 8]]
    assert f"wrote {cli_compiled.lib}" in cli_compiled.out
    assert "LUT layers: conv2, conv3, fc1" in cli_compiled.out
    # the applied tuning log (or none) is said, and recorded in the description
    said = re.search(r"^tuning log: (.+)$", cli_compiled.out, re.M)
    assert said, cli_compiled.out
    if meta["tuning_log"]:
        assert meta["tuning_log"].rsplit(" (", 1)[0] in said.group(1)
    else:
        assert said.group(1) == "none (default schedule rules)"


def test_run_matches_python_api_and_reference(capsys, files, default_plan, cli_compiled, api_output):
    out_path = files.tmp / "run" / "y.npy"
    code, out, err = cli(capsys, "run", cli_compiled.lib, files.input, "-o", out_path)
    assert code == 0, err
    assert f"wrote {out_path}: [{BATCH}, 10] float32" in out
    y = np.load(out_path)
    # the CLI's compile -> export -> load -> run is the Python API's compile, bit for bit
    np.testing.assert_array_equal(y, api_output)

    # and the NumPy reference run with the compiled model's codes (each checked against its nearest
    # centroid, near-ties aside), every sample
    tapped = compile_with_codes(str(files.onnx), str(default_plan.path), example_inputs=(files.x,))
    _, r = assert_matches_reference(y, tapped, cnn_reference, files.model, lut_tvm.Plan.load(default_plan.path),
                                    files.x)
    assert r.used == EXPECTED_LUT
    # and the LUT approximation shows, so the comparison above tells LUT from dense
    with torch.no_grad():
        dense = files.model(torch.from_numpy(files.x)).numpy()
    assert np.abs(y - dense).max() > 1e-3


def test_run_time_prints_latency(capsys, files, cli_compiled):
    code, out, err = cli(capsys, "run", cli_compiled.lib, files.input,
                         "-o", files.tmp / "run" / "timed.npy", "--time")
    assert code == 0, err
    match = re.search(r"^median latency: (\d+\.\d+) ms \((\d+) threads\)$", out, re.M)
    assert match, out
    assert 0 < float(match.group(1)) < 10_000


def test_run_output_without_suffix_reports_the_file_written(capsys, files, cli_compiled):
    """np.save appends .npy; the message must name that file (and its folder is created)."""
    target = files.tmp / "run" / "new" / "dir" / "result"
    code, out, err = cli(capsys, "run", cli_compiled.lib, files.input, "-o", target)
    assert code == 0, err
    written = target.with_name("result.npy")
    assert written.is_file()
    assert f"wrote {written}:" in out


def test_compile_dump_ir_writes_each_stage(cli_compiled):
    stages = ["01_imported", "02_lut_rewrite", "03_legalized", "04_scheduled"]
    assert sorted(p.stem for p in cli_compiled.ir_dir.glob("*.py")) == stages
    imported = (cli_compiled.ir_dir / "01_imported.py").read_text()
    rewritten = (cli_compiled.ir_dir / "02_lut_rewrite.py").read_text()
    scheduled = (cli_compiled.ir_dir / "04_scheduled.py").read_text()
    assert "lut_encode" not in imported
    for kernel in ("lut_encode_conv2d", "lut_lookup_conv2d", "lut_encode_dense", "lut_lookup_dense"):
        assert kernel in rewritten, kernel
        assert re.search(rf"def {kernel}\w*\(", scheduled), kernel


# --------------------------------------------------------------------------- errors

def test_error_plan_for_another_model(capsys, files, default_plan):
    msg = cli_error(capsys, "compile", files.other_onnx, "--plan", default_plan.path,
                    "-o", files.tmp / "never" / "m.so")
    assert "'conv2'" in msg and str(files.other_onnx) in msg and "another model" in msg


def test_error_missing_input_npy(capsys, files, cli_compiled):
    missing = files.tmp / "no_input.npy"
    msg = cli_error(capsys, "run", cli_compiled.lib, missing)
    assert "input" in msg and str(missing) in msg and "does not exist" in msg


def test_error_input_of_wrong_shape(capsys, files, cli_compiled):
    msg = cli_error(capsys, "run", cli_compiled.lib, files.calibration,
                    "-o", files.tmp / "run" / "never.npy")
    assert str(files.calibration) in msg  # names the file at fault
    assert f"[{NUM_CALIBRATION}, 1, 8, 8]" in msg and f"[{BATCH}, 1, 8, 8]" in msg
    assert not (files.tmp / "run" / "never.npy").exists()


def test_error_wrong_number_of_inputs(capsys, files, cli_compiled):
    msg = cli_error(capsys, "run", cli_compiled.lib, files.input, files.input)
    assert "1 input(s)" in msg and "got 2" in msg


def test_subprocess_error_exit_code_and_one_line(files, cli_compiled):
    proc = subprocess.run(
        [sys.executable, "-m", "lut_tvm.cli", "run", str(cli_compiled.lib), str(files.calibration)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lut-tvm run: error: input file ") and str(files.calibration) in lines[0]
    assert proc.stdout == ""



# ----------------------------------------------------------------- bad input (data loss)


def _digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_output_that_is_an_input_is_refused(capsys, files, default_plan, monkeypatch):
    """-o naming an input (however spelled) would overwrite it: refused, the input untouched."""
    monkeypatch.chdir(files.tmp)
    before = {p: _digest(p) for p in (files.onnx, files.calibration, default_plan.path)}
    cases = [
        (["compile", files.onnx, "-o", files.onnx], "model"),
        (["compile", "cnn.onnx", "-o", "./cnn.onnx"], "model"),
        (["compile", files.onnx, "--plan", default_plan.path, "-o", default_plan.path], "plan"),
        (["plan", files.onnx, "--calibration", files.calibration, "-o", files.calibration],
         "calibration"),
        (["plan", files.onnx, "--calibration", files.calibration, "-o", files.onnx], "model"),
        (["run", files.onnx, files.input, "-o", files.input], "input #0"),
    ]
    for argv, what in cases:
        msg = cli_error(capsys, *argv)
        assert what in msg and "destroy the input" in msg, msg
    assert before == {p: _digest(p) for p in before}


def test_nan_input_is_refused(capsys, files, cli_compiled, tmp_path):
    x = files.x.copy()
    x[2, 0, 3, 3] = np.nan
    path = tmp_path / "nan.npy"
    np.save(path, x)
    msg = cli_error(capsys, "run", cli_compiled.lib, path, "-o", tmp_path / "y.npy")
    assert "NaN" in msg
    assert not (tmp_path / "y.npy").exists()


def test_compile_output_lines(files, cli_compiled):
    """One "wrote" line, the target in words (not JSON), the tuning log outcome."""
    assert cli_compiled.out.count("wrote ") == 1, cli_compiled.out
    target_line = re.search(r"^target: (.+)$", cli_compiled.out, re.MULTILINE).group(1)
    assert "{" not in target_line and target_line.startswith("llvm")
    # stage lines went to stderr
    for stage in ("importing cnn.onnx", "binding plan", "rewriting 3 layer(s)", "building",
                  "writing"):
        assert f"lut-tvm compile: {stage}" in cli_compiled.err, stage


def test_plan_prints_each_layers_error(capsys, files, default_plan):
    plan = lut_tvm.Plan.load(default_plan.path)
    errors = plan.provenance["reconstruction_error"]
    assert list(errors) == EXPECTED_LUT
    for name, error in errors.items():
        assert 0 < error < 1
        assert re.search(rf"^\s+{name}\s.*output error {error:.3f}$", default_plan.out, re.MULTILINE), name
    assert ("lut_tvm.train" in default_plan.out) == (max(errors.values()) > 0.3)
    # one counted line for scikit-learn's warnings on dead ReLU channels, at most
    assert default_plan.err.count("k-means:") <= 1
    assert "ConvergenceWarning" not in default_plan.err
    for stage in ("importing", "calibration samples", "k-means"):
        assert stage in default_plan.err, stage


def test_plan_encode_int8_marks_the_dense_layers(files, default_plan):
    """``--encode int8``: the dense layer gets the int8 encode (plan version 6), the convs keep float;
    the same centroids as the default plan (the encode does not change k-means)."""
    path = files.tmp / "plans" / "int8_encode.npz"
    code, out, err = call("plan", files.onnx, "--calibration", files.calibration, "--encode", "int8", "-o", path)
    assert code == 0, err
    plan, default = lut_tvm.Plan.load(path), lut_tvm.Plan.load(default_plan.path)
    assert {layer.name: layer.encode.value for layer in plan.layers} == {
        layer.name: "int8" if layer.kind.value == "dense" else "float" for layer in plan.layers}
    assert "int8" in {layer.encode.value for layer in plan.layers} and plan.version == 6
    for mine, theirs in zip(plan.layers, default.layers):
        np.testing.assert_array_equal(mine.centroids, theirs.centroids)
    assert re.search(r"^\s+fc1\s.*encode int8", out, re.M), out
