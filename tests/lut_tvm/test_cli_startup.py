"""The command line answers at once: building the parser imports neither TVM nor torch, and a
missing input file is reported in one line before anything heavy is imported. Each check runs
in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("tvm", "tvm_ffi", "torch", "onnx", "onnxruntime", "sklearn")
# A fresh interpreter reporting a missing file: well under TVM's import alone (several seconds).
QUICK_SECONDS = 4.0


def _python(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_parser_builds_without_importing_tvm_or_torch():
    proc = _python("-c", textwrap.dedent("""
        import json, sys
        from lut_tvm.cli import COMMANDS, build_parser
        heavy = json.loads(sys.argv[1])
        parser = build_parser()
        sub = next(a for a in parser._actions if a.dest == "command")
        print(json.dumps({"heavy": sorted(m for m in sys.modules if m.split(".")[0] in heavy),
                          "commands": sorted(sub.choices), "listed": list(COMMANDS)}))
    """), json.dumps(HEAVY))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    # Every command module present is registered; "optimize" only where its module exists.
    present = [c for c in result["listed"] if (ROOT / "lut_tvm" / "cli" / f"{c}.py").is_file()]
    assert sorted(present) == result["commands"]
    assert {"plan", "compile", "tune", "run", "bench", "device", "demo"} <= set(result["commands"])


def test_parsing_and_checking_arguments_imports_nothing_heavy(tmp_path):
    proc = _python("-c", textwrap.dedent("""
        import json, sys
        from lut_tvm.cli import main
        heavy = json.loads(sys.argv[1])
        code = main(["compile", sys.argv[2], "-o", sys.argv[3]])
        print(json.dumps({"code": code,
                          "heavy": sorted(m for m in sys.modules if m.split(".")[0] in heavy)}))
    """), json.dumps(HEAVY), str(tmp_path / "missing.onnx"), str(tmp_path / "x.so"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"code": 2, "heavy": []}


@pytest.mark.parametrize("argv, what", [
    (["compile", "{missing}", "-o", "{tmp}/x.so"], "model file"),
    (["tune", "{missing}", "--trials", "1"], "model file"),
    (["plan", "{missing}", "--calibration", "{missing}"], "model file"),
    (["run", "{missing}", "{missing}"], "compiled model"),
])
def test_missing_file_fails_at_once_in_one_line(tmp_path, argv, what):
    missing = tmp_path / "missing.onnx"
    args = [a.format(missing=missing, tmp=tmp_path) for a in argv]
    start = time.monotonic()
    proc = _python("-m", "lut_tvm.cli", *args, timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"lut-tvm {argv[0]}: error: {what} {str(missing)!r} does not exist"]
    assert elapsed < QUICK_SECONDS, f"{elapsed:.1f} s to report a missing file"
    assert not (tmp_path / "x.so").exists()
