"""End to end: k-means plan -> lut_tvm.compile (torch and ONNX frontends) -> run, checked
against an independent NumPy forward built from ``lut_tvm.reference`` (LUT layers, run with the
compiled model's codes, each checked against the nearest centroid) and plain NumPy/torch (dense
layers), and the unplanned model against PyTorch and ONNX Runtime.

One plan is made per model from the torch module and reused for the ONNX import, so a pass
also shows that plans bind by weight fingerprint across frontends.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from small_models import (CNN, DENSE_TOL, LUT_TOL, MLP, Dense3D, assert_matches_reference,
                          cnn_reference, dense3d_reference, export_onnx, mlp_reference, ort_out,
                          seeded, torch_out)
from torch import nn

import lut_tvm
from lut_tvm.testing import compile_with_codes

pytestmark = [
    # k-means on a codebook whose sub-vectors are all equal (a dead ReLU channel): benign
    pytest.mark.filterwarnings("ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore:Renaming name:UserWarning"),
]


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 8x8 digits, scaled to [0, 1], float32 [1797, 8, 8]."""
    from sklearn.datasets import load_digits

    return (load_digits().images / 16.0).astype(np.float32)


# --------------------------------------------------------------------------- cases


class Case:
    """One model with its plan (from the torch module), ONNX file and compiled variants."""

    def __init__(self, name, model, calibration, x, reference, expected_lut, tmp):
        self.name, self.model, self.x, self.reference = name, model, x, reference
        self.expected_lut = expected_lut
        self.tmp = tmp
        self.plan = lut_tvm.build_kmeans_plan(model, calibration)
        self.onnx_path = export_onnx(model, x, tmp / f"{name}.onnx")
        self._compiled = {}
        self._tapped = {}

    def compiled(self, frontend, planned=True, **kwargs):
        key = (frontend, planned)
        if key not in self._compiled:
            source = self.model if frontend == "torch" else str(self.onnx_path)
            self._compiled[key] = lut_tvm.compile(
                source, self.plan if planned else None, example_inputs=(self.x,), **kwargs)
        return self._compiled[key]

    def tapped(self, frontend):
        """The planned model compiled with its codes tapped (``compile_with_codes``)."""
        if frontend not in self._tapped:
            source = self.model if frontend == "torch" else str(self.onnx_path)
            self._tapped[frontend] = compile_with_codes(source, self.plan, example_inputs=(self.x,))
        return self._tapped[frontend]


@pytest.fixture(scope="module")
def mlp_case(digits, tmp_path_factory):
    flat = digits.reshape(len(digits), -1)
    return Case("mlp", seeded(MLP, 0), flat[:256], flat[1000:1032], mlp_reference,
                ["fc1", "fc2"], tmp_path_factory.mktemp("mlp"))


@pytest.fixture(scope="module")
def cnn_case(digits, tmp_path_factory):
    images = digits[:, None]
    case = Case("cnn", seeded(CNN, 1), images[:256], images[1000:1032], cnn_reference,
                ["conv2", "conv3", "fc1"], tmp_path_factory.mktemp("cnn"))
    # The torch-planned compile of the CNN also dumps its IR, for test_kernels_all_scheduled.
    case.ir_dir = case.tmp / "ir"
    case.compiled("torch", dump_ir=case.ir_dir)
    return case


@pytest.fixture(scope="module")
def dense3d_case(tmp_path_factory):
    rng = np.random.default_rng(2)
    calibration = rng.standard_normal((64, 5, 32)).astype(np.float32)
    x = rng.standard_normal((2, 5, 32)).astype(np.float32)
    return Case("dense3d", seeded(Dense3D, 2), calibration, x, dense3d_reference,
                ["proj"], tmp_path_factory.mktemp("dense3d"))


@pytest.fixture(params=["mlp", "cnn", "dense3d"])
def case(request):
    return request.getfixturevalue(f"{request.param}_case")


# --------------------------------------------------------------------------- tests


def test_default_policy_plans_the_expected_layers(case):
    names = [layer.name for layer in case.plan.layers]
    assert names == case.expected_lut
    # PlanPolicy defaults: the first conv and the last Linear stay dense.
    assert "conv1" not in names
    last_linear = [n for n, m in case.model.named_modules() if isinstance(m, nn.Linear)][-1]
    assert last_linear not in names
    for layer in case.plan.layers:
        layer.validate()
        assert layer.num_centroids == 16


@pytest.mark.parametrize("frontend", ["torch", "onnx"])
def test_lut_compile_matches_reference(case, frontend):
    compiled = case.compiled(frontend)
    assert compiled.info.lut_layers == case.expected_lut
    y = compiled(case.x)

    _, r = assert_matches_reference(y, case.tapped(frontend), case.reference, case.model, case.plan, case.x)
    assert r.used == case.expected_lut  # the reference really took the LUT path for them
    # ...and the LUT approximation is visible, so the comparison above can tell LUT from dense.
    assert np.abs(y - torch_out(case.model, case.x)).max() > 1e-3


def test_onnx_and_torch_lut_compiles_agree(case):
    """Same plan bound through both frontends: the same LUT layers, the same numbers on every
    sample whose codes agree (codes may differ only at near-ties: test_lut_compile_matches_reference)."""
    torch_c, onnx_c = case.compiled("torch"), case.compiled("onnx")
    assert onnx_c.info.lut_layers == torch_c.info.lut_layers == case.expected_lut
    (torch_y, torch_codes), (onnx_y, onnx_codes) = case.tapped("torch")(case.x), case.tapped("onnx")(case.x)
    same = np.ones(len(case.x), dtype=bool)
    for a, b in zip(torch_codes, onnx_codes, strict=True):
        same &= (a == b).reshape(len(case.x), -1).all(1)
    np.testing.assert_allclose(onnx_y[same], torch_y[same], **LUT_TOL)


@pytest.mark.parametrize("frontend", ["torch", "onnx"])
def test_unplanned_compile_matches_torch_and_onnxruntime(case, frontend):
    compiled = case.compiled(frontend, planned=False)
    assert compiled.info.lut_layers == []
    y = compiled(case.x)
    torch_y = torch_out(case.model, case.x)
    assert y.shape == torch_y.shape
    np.testing.assert_allclose(y, torch_y, **DENSE_TOL)
    np.testing.assert_allclose(y, ort_out(case.onnx_path, case.x), **DENSE_TOL)
    # the no-plan reference forward is plain float math too
    np.testing.assert_allclose(y, case.reference(case.model, None, case.x)[0], **DENSE_TOL)


def test_export_then_load_gives_same_outputs(case):
    compiled = case.compiled("torch")
    path = compiled.export(case.tmp / "export" / f"{case.name}.so")
    assert path.is_file() and path.with_name(path.name + ".json").is_file()
    loaded = lut_tvm.load(path)
    assert loaded.info.lut_layers == case.expected_lut
    assert loaded.info.input_shapes == [list(case.x.shape)]
    np.testing.assert_array_equal(loaded(case.x), compiled(case.x))


def test_saved_plan_compiles_to_same_outputs(case):
    path = case.plan.save(case.tmp / "plans" / f"{case.name}.npz")
    loaded = lut_tvm.Plan.load(path)
    assert [l.name for l in loaded.layers] == [l.name for l in case.plan.layers]
    for before, after in zip(case.plan.layers, loaded.layers):
        assert after.weight_fingerprint == before.weight_fingerprint
        np.testing.assert_array_equal(after.centroids, before.centroids)
    # compile from the file path (not the in-memory Plan)
    from_file = lut_tvm.compile(case.model, str(path), example_inputs=(case.x,))
    assert from_file.info.lut_layers == case.expected_lut
    np.testing.assert_array_equal(from_file(case.x), case.compiled("torch")(case.x))


def test_dense3d_lut_layer_keeps_leading_dims(dense3d_case):
    """[2, 5, 32] -> LUT proj -> [2, 5, 24] -> dense out -> [2, 5, 8]."""
    y = dense3d_case.compiled("torch")(dense3d_case.x)
    assert y.shape == (2, 5, 8)
    assert_matches_reference(y, dense3d_case.tapped("torch"), dense3d_reference, dense3d_case.model,
                             dense3d_case.plan, dense3d_case.x)
    # rows are independent: swapping the two batch items swaps the outputs, so a reshape that
    # mixed up rows between batch items would show here
    swapped = dense3d_case.x[::-1].copy()
    np.testing.assert_allclose(dense3d_case.compiled("torch")(swapped), y[::-1], **LUT_TOL)


_PRIM_FUNC = re.compile(r"^\s*@T\.prim_func\b.*\n\s*def (\w+)\(", re.M)


def test_kernels_all_scheduled(cnn_case):
    ir_dir = cnn_case.ir_dir
    for stage in ("01_imported", "02_lut_rewrite", "03_legalized", "04_scheduled"):
        assert (ir_dir / f"{stage}.py").is_file(), stage
    text = (ir_dir / "04_scheduled.py").read_text()
    starts = [(m.start(), m.group(1)) for m in _PRIM_FUNC.finditer(text)]
    assert len(starts) == text.count("@T.prim_func"), "a PrimFunc header was not recognised"
    names = [name for _, name in starts]
    # the LUT kernels of all three planned layers are there, besides the dense ones
    for kernel in ("lut_encode_conv2d", "lut_lookup_conv2d", "lut_encode_dense", "lut_lookup_dense"):
        assert any(n.startswith(kernel) for n in names), (kernel, names)
    assert any(not n.startswith("lut_") for n in names), names
    ends = [pos for pos, _ in starts[1:]] + [len(text)]
    unscheduled = []
    for (start, name), end in zip(starts, ends):
        body = text[start:end]
        attrs = re.search(r"T\.func_attr\((\{.*?\})\)", body)
        if not attrs or not re.search(r'"tirx\.is_scheduled":\s*(True|1)\b', attrs.group(1)):
            unscheduled.append(name)
    assert not unscheduled, f"PrimFuncs without tirx.is_scheduled: {unscheduled}"


def test_plan_file_for_another_model_is_named(mlp_case, cnn_case):
    """A LUT-NN plan file that binds no weight of the model: the error names the file and a layer."""
    path = mlp_case.plan.save(mlp_case.tmp / "plans" / "for_the_mlp.npz")
    with pytest.raises(lut_tvm.PlanError, match=r"^plan file '.*for_the_mlp\.npz': plan layer 'fc1'.*"
                                                r"matches no weight"):
        lut_tvm.compile(cnn_case.model, str(path), example_inputs=(cnn_case.x,))
