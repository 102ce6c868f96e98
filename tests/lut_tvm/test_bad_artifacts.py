"""Bad artifacts and model files get a LutTvmError subclass naming the file, without a traceback
(corrupt or unsupported ``.pt2``, a library that is not the described one); exporting and loading
print nothing and publish whole library/description pairs; planning reports each layer's error
and folds scikit-learn's warnings into one line."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import shutil
import threading
import warnings

import numpy as np
import pytest
import torch
from tiny_model import X, kmeans_plan, raises, tiny
from torch import nn

import lut_tvm
from lut_tvm import ArtifactError, ModelLoadError


@pytest.fixture(scope="module")
def model():
    return tiny(0)


@pytest.fixture(scope="module")
def plan(model):
    return kmeans_plan(model)


# --------------------------------------------------------------------------- .pt2 files


class _Bessel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 8)

    def forward(self, x):
        return torch.special.bessel_j0(self.fc(x))


def test_pt2_with_an_op_the_frontend_lacks(tmp_path):
    path = tmp_path / "bessel.pt2"
    torch.export.save(torch.export.export(_Bessel().eval(), (torch.from_numpy(X),)), str(path))
    message = raises(ModelLoadError, lut_tvm.compile, str(path))
    assert str(path) in message and "special_bessel_j0" in message


def test_corrupt_pt2_gives_one_error_and_no_logged_traceback(model, tmp_path, capfd, caplog):
    good = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model, (torch.from_numpy(X),)), str(good))
    bad = tmp_path / "truncated.pt2"
    bad.write_bytes(good.read_bytes()[:400])
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG):
        message = raises(ModelLoadError, lut_tvm.compile, str(bad))
    assert str(bad) in message and "corrupt, or saved by another torch version" in message
    assert "\n" not in message
    captured = capfd.readouterr()
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "Traceback" not in captured.err + captured.out + "".join(logged), logged


# --------------------------------------------------------------------------- export / load


def test_export_and_load_print_no_scope_lines(model, plan, tmp_path, capfd):
    compiled = lut_tvm.compile(model, plan, example_inputs=(X,))
    capfd.readouterr()
    path = compiled.export(tmp_path / "m.so")
    loaded = lut_tvm.load(path)
    captured = capfd.readouterr()
    assert "Scope" not in captured.err + captured.out
    np.testing.assert_array_equal(loaded(X), compiled(X))
    # stderr works again afterwards (the redirection around the calls is undone)
    os.write(2, b"still here\n")
    assert "still here" in capfd.readouterr().err


def test_concurrent_exports_to_one_path_publish_whole_pairs(model, plan, tmp_path):
    """Eight threads export two different models to one path while four threads load it:
    no export fails, and every load (and the final file) is a library with its own description."""
    dense = lut_tvm.compile(model, None, example_inputs=(X,))
    lut = lut_tvm.compile(model, plan, example_inputs=(X,))
    expected = {(): dense(X), ("fc1",): lut(X)}
    assert np.abs(expected[()] - expected[("fc1",)]).max() > 1e-3  # the outputs tell them apart
    path = tmp_path / "shared" / "model.so"
    dense.export(path)
    stop = threading.Event()
    problems = []

    def export(index):
        (lut if index % 2 else dense).export(path)

    def reader():
        while not stop.is_set():
            loaded = lut_tvm.load(path)
            out = loaded(X)
            if not np.array_equal(out, expected[tuple(loaded.info.lut_layers)]):
                problems.append(loaded.info.lut_layers)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for thread in readers:
        thread.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(export, range(8)))  # re-raises an export's exception
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert not problems, problems
    final = lut_tvm.load(path)
    np.testing.assert_array_equal(final(X), expected[tuple(final.info.lut_layers)])
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.so", "model.so.json"]


def test_load_refuses_a_library_that_is_not_the_described_one(model, plan, tmp_path):
    dense = lut_tvm.compile(model, None, example_inputs=(X,)).export(tmp_path / "dense.so")
    lut = lut_tvm.compile(model, plan, example_inputs=(X,)).export(tmp_path / "lut.so")
    shutil.copyfile(lut, dense)  # dense.so.json still describes the dense model
    message = raises(ArtifactError, lut_tvm.load, dense)
    assert str(dense) in message and "not the library" in message


# --------------------------------------------------------------------------- planning


def test_plan_reports_each_layers_reconstruction_error(model, plan):
    """The relative output error of fc1 on its calibration rows, against NumPy: fc1's inputs
    are the calibration samples themselves."""
    calibration = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float64)
    centroids = plan.layers[0].centroids.astype(np.float64)  # [C, K, V]
    num_codebooks, _, sub_len = centroids.shape
    weight = model.fc1.weight.detach().numpy().T.astype(np.float64)  # [D, N]
    exact = calibration @ weight
    approx = np.zeros_like(exact)
    for c in range(num_codebooks):
        block = calibration[:, c * sub_len:(c + 1) * sub_len]
        nearest = ((block[:, None, :] - centroids[c][None]) ** 2).sum(-1).argmin(1)
        approx += centroids[c][nearest] @ weight[c * sub_len:(c + 1) * sub_len]
    expected = np.linalg.norm(exact - approx) / np.linalg.norm(exact)
    reported = plan.provenance["reconstruction_error"]["fc1"]
    assert 0 < expected < 1
    assert reported == pytest.approx(expected, abs=2e-6)


def test_kmeans_convergence_warnings_fold_into_one_line(caplog):
    """fc1's first 8 outputs are dead (ReLU of a large negative bias): fc2's first codebook
    (V = 8) is all zeros, and scikit-learn warns once per codebook with too few distinct points."""
    model = tiny(0)
    with torch.no_grad():
        model.fc1.bias[:8] = -1e3
    calibration = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)
    policy = lut_tvm.PlanPolicy(only=["fc2"], dense_sub_len=8)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, "lut_tvm"):
        warnings.simplefilter("always")
        plan = lut_tvm.build_kmeans_plan(model, calibration, policy)
    assert plan.layers[0].centroids.shape == (2, 16, 8)
    assert not [w for w in caught if type(w.message).__name__ == "ConvergenceWarning"]
    folded = [r.getMessage() for r in caplog.records if "k-means:" in r.getMessage()]
    assert len(folded) == 1 and folded[0].startswith("k-means: 1 codebook(s)"), folded
