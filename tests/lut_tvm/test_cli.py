"""The ``lut-tvm`` command line, called in-process through ``lut_tvm.cli.main`` (and once as a
subprocess): plan -> compile -> run on a small ONNX CNN, checked against the Python API and the
NumPy reference; its flags; its one-line errors (exit 2); its help texts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from small_models import CNN, assert_matches_reference, cnn_reference, export_onnx, seeded

import lut_tvm
from lut_tvm.cli import main
from lut_tvm.testing import compile_with_codes

pytestmark = [
    # k-means on a codebook whose sub-vectors are all equal (a dead ReLU channel): benign
    pytest.mark.filterwarnings("ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore:Renaming name:UserWarning"),
]

REPO = Path(__file__).resolve().parents[2]
BATCH = 16  # the ONNX model's static batch
NUM_CALIBRATION = 256  # a multiple of BATCH
EXPECTED_LUT = ["conv2", "conv3", "fc1"]  # conv1 (first conv) and fc2 (last Linear) stay dense
# default-policy centroids [C, K, V]: conv2 D=8*3*3, V=3*3; conv3 (1x1) D=16, V=4; fc1 D=256, V=16
DEFAULT_SHAPES = {"conv2": (8, 16, 9), "conv3": (4, 16, 4), "fc1": (16, 16, 16)}


def _call(*argv):
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


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def files(tmp_path_factory):
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


@pytest.fixture(scope="module")
def default_plan(files):
    path = files.tmp / "plans" / "default.npz"
    code, out, err = _call("plan", files.onnx, "--calibration", files.calibration, "-o", path)
    assert code == 0, err
    return SimpleNamespace(path=path, out=out, err=err)


@pytest.fixture(scope="module")
def cli_compiled(files, default_plan):
    """``lut-tvm compile cnn.onnx --plan default.npz --dump-ir ir -o build/model.so``."""
    lib = files.tmp / "build" / "model.so"
    ir_dir = files.tmp / "ir"
    code, out, err = _call("compile", files.onnx, "--plan", default_plan.path, "-o", lib,
                           "--dump-ir", ir_dir)
    assert code == 0, err
    return SimpleNamespace(lib=lib, ir_dir=ir_dir, out=out, err=err)


@pytest.fixture(scope="module")
def api_output(files, default_plan):
    """The Python API on the same model, plan and input."""
    compiled = lut_tvm.compile(str(files.onnx), str(default_plan.path))
    assert compiled.info.lut_layers == EXPECTED_LUT
    return compiled(files.x)


def plan_with(capsys, files, name, *flags):
    """A plan made by ``lut-tvm plan`` with extra flags (few k-means rows, for speed)."""
    path = files.tmp / "plans" / f"{name}.npz"
    code, out, err = cli(capsys, "plan", files.onnx, "--calibration", files.calibration,
                         "--max-rows", 512, "-o", path, *flags)
    assert code == 0, err
    assert f"wrote {path}" in out
    plan = lut_tvm.Plan.load(path)
    return {layer.name: layer.centroids.shape for layer in plan.layers}, plan


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


def test_error_plan_for_another_model(capsys, files, default_plan):
    msg = cli_error(capsys, "compile", files.other_onnx, "--plan", default_plan.path,
                    "-o", files.tmp / "never" / "m.so")
    assert "'conv2'" in msg and str(files.other_onnx) in msg and "another model" in msg


def test_error_missing_plan_or_calibration_file(capsys, files):
    msg = cli_error(capsys, "compile", files.onnx, "--plan", files.tmp / "no_plan.npz")
    assert "no_plan.npz" in msg and "does not exist" in msg
    msg = cli_error(capsys, "plan", files.onnx, "--calibration", files.tmp / "no_calib.npy")
    assert "calibration" in msg and "no_calib.npy" in msg


def test_error_missing_input_npy(capsys, files, cli_compiled):
    missing = files.tmp / "no_input.npy"
    msg = cli_error(capsys, "run", cli_compiled.lib, missing)
    assert "input" in msg and str(missing) in msg and "does not exist" in msg


def test_error_missing_artifact(capsys, files):
    msg = cli_error(capsys, "run", files.tmp / "no_model.so", files.input)
    assert "no_model.so" in msg and "does not exist" in msg


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


# --------------------------------------------------------------------------- bad input (issue: data loss,
# tracebacks, silence)


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
