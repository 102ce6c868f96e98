"""Bad input gets a LutTvmError subclass whose message names the file, layer, field or input
at fault, not a NumPy/TVM traceback: plans, model files, targets, inputs, files written. Bad
artifacts, ``.pt2`` files and planning warnings: ``test_bad_artifacts.py``."""

from __future__ import annotations

import dataclasses
import json
import os
import stat

import numpy as np
import pytest
import torch
from tiny_model import X, kmeans_plan, raises, tiny

import lut_tvm
from lut_tvm import ArtifactError, LutTvmError, ModelLoadError, PlanError, TargetError


@pytest.fixture(scope="module")
def model():
    return tiny(0)


@pytest.fixture(scope="module")
def plan(model):
    return kmeans_plan(model)


@pytest.fixture(scope="module")
def compiled(model):
    return lut_tvm.compile(model, None, example_inputs=(X,))


def test_plan_for_another_model(plan):
    other = tiny(1)  # same architecture, other weights
    message = raises(PlanError, lut_tvm.compile, other, plan, example_inputs=(X,))
    assert "'fc1'" in message
    assert "another model" in message


def test_plan_with_wrong_centroid_shape(model, plan):
    layer = plan.layers[0]
    num_codebooks, num_centroids, sub_len = layer.centroids.shape
    # C*V = 2*8 = 16, but fc1 reduces over D = 32
    wrong = np.ascontiguousarray(layer.centroids[:, :, : sub_len // 2])
    bad = lut_tvm.Plan([dataclasses.replace(layer, centroids=wrong)])
    message = raises(PlanError, lut_tvm.compile, model, bad, example_inputs=(X,))
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
    message = raises(PlanError, lut_tvm.Plan.load, path)
    assert str(path) in message and "'fc1'" in message and "centroids" in message


def test_unknown_target(model):
    message = raises(TargetError, lut_tvm.compile, model, None, target="riscv-v",
                      example_inputs=(X,))
    assert "riscv-v" in message
    for name in ("x86-avx2", "x86-avx512", "arm64", "native"):
        assert name in message


def test_missing_model_file(tmp_path):
    path = tmp_path / "nowhere" / "model.onnx"
    message = raises(ModelLoadError, lut_tvm.compile, str(path), None, example_inputs=(X,))
    assert str(path) in message


def test_onnx_file_that_is_not_onnx(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x00\xffthis is not a protobuf\x13\x37" * 16)
    message = raises(ModelLoadError, lut_tvm.compile, str(path), None, example_inputs=(X,))
    assert str(path) in message


def test_wrong_input_shape(compiled):
    (name,) = compiled.info.input_names
    message = raises(ArtifactError, compiled, np.zeros((3, 32), np.float32))
    assert repr(name) in message
    assert "[3, 32]" in message and "[4, 32]" in message
    # the right shape runs
    assert compiled(X).shape == (4, 8)


def test_wrong_number_of_inputs(compiled):
    message = raises(ArtifactError, compiled, X, X)
    assert compiled.info.input_names[0] in message


def test_load_missing_artifact(tmp_path):
    path = tmp_path / "missing.so"
    message = raises(ArtifactError, lut_tvm.load, path)
    assert str(path) in message


def test_load_artifact_without_its_description(compiled, tmp_path):
    path = compiled.export(tmp_path / "model.so")
    sidecar = path.with_name(path.name + ".json")
    sidecar.unlink()
    message = raises(ArtifactError, lut_tvm.load, path)
    assert str(sidecar) in message


# --------------------------------------------------------------------------- files written


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_plan_and_text_files_follow_the_umask(plan, tmp_path, umask):
    """Atomic writes go through a temporary file (0600): the result gets 0666 & ~umask."""
    from lut_tvm.files import write_text_atomic

    old = os.umask(umask)
    try:
        plan_path = plan.save(tmp_path / "plan.npz")
        text_path = write_text_atomic(tmp_path / "notes.txt", "x")
    finally:
        os.umask(old)
    for path in (plan_path, text_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "plan.npz"]  # no temp left


# --------------------------------------------------------------------------- plan files


def _rewrite_plan(path, edit_meta=None, edit_arrays=None):
    """Rewrite a saved plan's metadata and/or arrays in place (as a hand edit would)."""
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    meta = json.loads(arrays["__plan__"].tobytes().decode())
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    arrays["__plan__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    return path


def test_plan_file_with_transposed_centroids(plan, model, tmp_path):
    """fc1's centroids [C, K, V] = [2, 16, 16] read as [16, 16, 2]: same size, C*V = D = 32
    still; only the recorded K/V tell it apart (it compiled and ran before)."""
    path = plan.save(tmp_path / "plan.npz")
    assert plan.layers[0].centroids.shape == (2, 16, 16)

    def transpose(arrays):
        arrays["layer0.centroids"] = np.ascontiguousarray(arrays["layer0.centroids"].transpose(2, 1, 0))

    _rewrite_plan(path, edit_arrays=transpose)
    message = raises(PlanError, lut_tvm.compile, model, str(path), example_inputs=(X,))
    assert str(path) in message and "'fc1'" in message and "centroids" in message
    assert "[16, 16, 2]" in message and "V = 16" in message


def _drop_name(meta):
    del meta["layers"][0]["name"]


@pytest.mark.parametrize("edit, expected", [
    (_drop_name, "no field 'name'"),
    (lambda meta: meta["layers"][0].update(name=""), "field 'name'"),
    (lambda meta: meta.update(layers={"fc1": meta["layers"][0]}), "field 'layers' must be a list"),
    (lambda meta: meta.update(layers=[5]), "must be an object"),
    (lambda meta: meta["layers"][0].update(weight_shape=5), "field 'weight_shape' is 5"),
    (lambda meta: meta["layers"][0].update(weight_shape=[32, "16"]), "field 'weight_shape'"),
    (lambda meta: meta["layers"][0].update(weight_fingerprint=7), "field 'weight_fingerprint'"),
    (lambda meta: meta["layers"][0].update(kind=["dense"]), "field 'kind'"),
    (lambda meta: meta["layers"][0].update(num_centroids="16"), "field 'num_centroids'"),
    (lambda meta: meta.update(provenance=[]), "field 'provenance'"),
])
def test_plan_file_with_wrong_metadata_types(plan, tmp_path, edit, expected):
    path = _rewrite_plan(plan.save(tmp_path / "plan.npz"), edit_meta=edit)
    message = raises(PlanError, lut_tvm.Plan.load, path)
    assert str(path) in message and expected in message


def test_exact_plan_file_without_name_or_with_wrong_types(model, tmp_path):
    from lut_tvm.exact.plan import ExactLayerPlan, ExactPlan
    from lut_tvm.weights import LayerKind

    weight = model.fc1.weight.detach().numpy().T.copy()  # dense [D, N]
    layer = ExactLayerPlan.from_weight("fc1", LayerKind.DENSE, weight, bits=4, act_scale=0.05)
    path = ExactPlan([layer]).save(tmp_path / "exact.npz")
    assert ExactPlan.load(path).layers[0].name == "fc1"
    for edit, expected in [(_drop_name, "no field 'name'"),
                           (lambda meta: meta["layers"][0].update(weight_shape=5), "'weight_shape'"),
                           (lambda meta: meta.update(layers={}), "'layers' must be a list"),
                           (lambda meta: meta["layers"][0].update(piece_bits="2"), "'piece_bits'")]:
        path = ExactPlan([layer]).save(tmp_path / "exact.npz")
        with np.load(path) as npz:
            arrays = {key: npz[key] for key in npz.files}
        meta = json.loads(arrays["__plan__"].tobytes().decode())
        edit(meta)
        arrays["__plan__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez(path, **arrays)
        message = raises(PlanError, ExactPlan.load, path)
        assert str(path) in message and expected in message, message


def test_text_file_given_as_plan(model, tmp_path):
    path = tmp_path / "plan.npz"
    path.write_text("layer fc1: K=16 V=16\n")
    message = raises(PlanError, lut_tvm.compile, model, str(path), example_inputs=(X,))
    assert str(path) in message and "text file" in message and "plan" in message
    assert "pickle" not in message


# --------------------------------------------------------------------------- inputs


def test_nan_and_inf_inputs_are_refused(model, plan):
    compiled = lut_tvm.compile(model, plan, example_inputs=(X,))
    (name,) = compiled.info.input_names
    for bad_value in (np.nan, np.inf, -np.inf):
        x = X.copy()
        x[1, 3] = bad_value
        message = raises(ArtifactError, compiled, x)
        assert repr(name) in message and "1 NaN/infinite" in message
        # PyTorch propagates it; the LUT layer would have encoded it to a finite centroid
        with torch.no_grad():
            assert not np.isfinite(model(torch.from_numpy(x)).numpy()[1]).all()
        # the opt-out runs it anyway
        assert compiled(x, check_finite=False).shape == (4, 8)
    np.testing.assert_array_equal(compiled(X), compiled(X, check_finite=False))


def test_calibration_of_the_wrong_shape(model):
    calibration = np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32)
    message = raises(PlanError, lut_tvm.build_kmeans_plan, model, calibration,
                      example_inputs=(X,))
    assert "[64, 16]" in message and "[4, 32]" in message and "[S, 32]" in message


def test_missing_tuning_log_folder(model, tmp_path):
    folder = tmp_path / "no_such_logs"
    message = raises(LutTvmError, lut_tvm.compile, model, None, example_inputs=(X,),
                      tuning_logs=folder)
    assert str(folder) in message and "does not exist" in message


def test_target_as_json_dict_string():
    from lut_tvm.targets import describe_target, resolve_target

    target = resolve_target('{"kind": "llvm", "mcpu": "haswell"}')
    assert str(target.attrs["mcpu"]) == "haswell"
    assert describe_target(str(target)).startswith("llvm mcpu=haswell")
    assert "{" not in describe_target(str(target))
    for bad in ('{"kind": "llvm", ', '{"mcpu": "haswell"}'):
        message = raises(TargetError, resolve_target, bad)
        assert "kind" in message or "JSON" in message

