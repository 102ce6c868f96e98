"""``lut-tvm optimize`` end to end on an .onnx and a .pt2 file (the compiled-model evaluator), and its
one-line errors for bad inputs (exit 2, checked before TVM or torch are imported)."""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import numpy as np
import pytest
import torch

from lut_tvm.cli import main
from lut_tvm.plan import Plan


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def files(mlp_case, tmp_path_factory):
    """The digits MLP as .onnx and .pt2 (batch 32), calibration .npy and eval .npz (with and without y)."""
    model, calibration, x, y = mlp_case
    folder = tmp_path_factory.mktemp("cli_optimize")
    example = torch.from_numpy(x[:32])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(folder / "mlp.onnx"), dynamo=False)
        torch.export.save(torch.export.export(model, (example,)), str(folder / "mlp.pt2"))
    np.save(folder / "cal.npy", calibration[:512])
    np.savez(folder / "eval.npz", x=x[:160], y=y[:160])
    np.savez(folder / "eval_nolabels.npz", x=x[:160])
    np.savez(folder / "eval_narrow.npz", x=x[:160, :32], y=y[:160])
    return folder


@pytest.mark.parametrize("suffix,metric", [("onnx", "accuracy"), ("pt2", "cosine")])
def test_cli_end_to_end(files, suffix, metric, monkeypatch):
    evaluation = files / ("eval.npz" if metric == "accuracy" else "eval_nolabels.npz")
    plan_path = files / f"plan_{suffix}.npz"
    # the .pt2 run uses the default cache folder, under the user's cache (XDG_CACHE_HOME)
    monkeypatch.setenv("XDG_CACHE_HOME", str(files / f"xdg_{suffix}"))
    cache = ["--cache-dir", str(files / "cache")] if suffix == "onnx" else []
    # the .pt2 run: without the peers' rows, and k-means tables only (the .onnx run: the default ridge refit)
    quick = ["--no-peers", "--prune", "--refit", "none"] if suffix == "pt2" else []
    code, out, err = run_cli(["optimize", str(files / f"mlp.{suffix}"), "--calibration", str(files / "cal.npy"),
                              "--eval", str(evaluation), "--metric", metric, "--budget", "3",
                              "--sub-lens", "16", "--repeat", "2", *cache, *quick, "-o", str(plan_path)])
    assert code == 0, err
    default_cache = files / f"xdg_{suffix}" / "lut_tvm" / "optimize"
    assert bool(list(default_cache.glob("*.json"))) == (suffix == "pt2")
    assert bool(list((files / "cache").glob("*.json")))
    report = json.loads((files / f"plan_{suffix}_report" / "report.json").read_text())
    assert (files / f"plan_{suffix}_report" / "report.md").is_file()
    plan = Plan.load(plan_path)
    # a layer may be chosen int8 where that kernel times faster than its LUTs (CPU-dependent)
    assert {l.name: "int8" if l.is_int8 else l.sub_vector_len for l in plan.layers} == report["choice"]
    assert report["search_evaluator"] == "compiled" and report["metric"] == metric
    assert report["original_metric"] - report["chosen_metric_compiled"] <= 3
    assert {r["layer"] for r in report["layers"]} == {"fc1", "fc2", "fc3"}
    assert f"{metric}: original" in out and "wrote" in out
    assert bool(report["peers"]) == (suffix == "onnx")
    refit = "none" if suffix == "pt2" else "ridge"
    assert report["refit"]["method"] == refit and plan.provenance["refit"] == refit
    if refit == "none":
        assert all(layer.tables is None for layer in plan.layers)


@pytest.mark.parametrize("evaluation,args,message", [
    ("eval_nolabels.npz", [], "has no labels 'y', which --metric accuracy needs"),
    ("eval_narrow.npz", [], "calibration file .* has samples of shape \\[64\\], evaluation file .* has \\[32\\]"),
    ("missing.npz", [], "evaluation file .* does not exist"),
    ("eval.npz", ["--budget", "-1"], "budget -1.0 must be"),
])
def test_cli_bad_inputs_one_line(files, evaluation, args, message):
    code, _, err = run_cli(["optimize", str(files / "mlp.onnx"), "--calibration", str(files / "cal.npy"),
                            "--eval", str(files / evaluation), *args])
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("lut-tvm optimize: error: ")
    import re
    assert re.search(message, err), err
