"""export_plan + to_dense_model -> lut_tvm.compile (torch and ONNX frontends) reproduces the LUT
model's hard forward: the same codes (up to near-ties, where either code is right: the reference runs
with the compiled model's codes, each checked), the same INT8 tables, so equal up to float rounding. Also for a LUT
model with free tables (MADDNESS's ridge refit), which the plan carries (format version 2)."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import lut_tvm
from lut_tvm.errors import PlanError
from lut_tvm.npz_meta import META_KEY
from lut_tvm.plan import PLAN_VERSION, PLAN_VERSION_TABLES
from lut_tvm.policy import PlanPolicy, TableRefit
from lut_tvm.testing import compile_with_codes
from lut_tvm.train import LutConfig, convert, export_plan, lut_layers, ridge_refit, to_dense_model, train_lutnn
from lut_tvm.weights import fingerprint

pytestmark = pytest.mark.filterwarnings("ignore:Renaming name:UserWarning")

TOL = dict(rtol=1e-5, atol=1e-5)


def _mlp():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))


class Case:
    """A LUT model fine-tuned for one short epoch (so its weights differ from the original)."""

    def __init__(self, name, teacher, lut, x, tmp):
        self.name, self.teacher, self.lut, self.x, self.tmp = name, teacher, lut, x, tmp
        self.plan_path = tmp / f"{name}_plan.npz"
        self.plan = export_plan(lut, self.plan_path)
        self.dense = to_dense_model(lut)
        self.onnx_path = tmp / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(self.dense, (torch.from_numpy(x),), str(self.onnx_path), dynamo=False)
        with torch.no_grad():
            self.expected = lut.eval()(torch.from_numpy(x)).numpy()


def _finetuned(teacher, lut, data):
    x_train, _, y_train, _ = data
    train_lutnn(lut, teacher, (x_train[:256], y_train[:256]), epochs=1, lr=3e-3, seed=0)
    return lut


@pytest.fixture(scope="module")
def cnn_case(digits, digits_cnn, kmeans_cnn, tmp_path_factory):
    lut = _finetuned(digits_cnn, copy.deepcopy(kmeans_cnn), digits)
    return Case("cnn", digits_cnn, lut, digits[1][:72], tmp_path_factory.mktemp("cnn"))


@pytest.fixture(scope="module")
def mlp_case(digits, tmp_path_factory):
    flat = tuple(a.reshape(len(a), -1) if a.ndim == 4 else a for a in digits)
    teacher = _mlp().eval()
    lut = convert(teacher, LutConfig(policy=PlanPolicy(max_rows=1024)), flat[0])
    lut = _finetuned(teacher, lut, flat)
    return Case("mlp", teacher, lut, flat[1][:40], tmp_path_factory.mktemp("mlp"))


@pytest.fixture(params=["cnn", "mlp"])
def case(request):
    return request.getfixturevalue(f"{request.param}_case")


def test_plan_binds_the_current_weights(case):
    layers = lut_layers(case.lut)
    assert [l.name for l in case.plan.layers] == [n for n, _ in layers]
    dense_params = dict(case.dense.named_parameters())
    teacher_params = dict(case.teacher.named_parameters())
    for plan_layer, (name, layer) in zip(case.plan.layers, layers):
        weight = dense_params[f"{name}.weight"].detach().numpy()
        canonical = weight.T if weight.ndim == 2 else weight
        assert plan_layer.weight_fingerprint == fingerprint(canonical)
        assert tuple(plan_layer.weight_shape) == canonical.shape
        np.testing.assert_array_equal(plan_layer.centroids, layer.centroids.detach().numpy())
        # fine-tuning moved the weight: the plan would not bind the original model
        original = teacher_params[f"{name}.weight"].detach().numpy()
        assert fingerprint(original.T if original.ndim == 2 else original) != plan_layer.weight_fingerprint
    loaded = lut_tvm.Plan.load(case.plan_path)
    assert [l.weight_fingerprint for l in loaded.layers] == [l.weight_fingerprint for l in case.plan.layers]
    assert loaded.provenance["method"] == "learned"


def test_dense_model_is_the_original_architecture_with_trained_weights(case):
    assert not lut_layers(case.dense)
    assert [type(m) for m in case.dense.modules()] == [type(m) for m in case.teacher.modules()]
    lut_state = case.lut.state_dict()
    for key, value in case.dense.state_dict().items():
        torch.testing.assert_close(value, lut_state[key], rtol=0, atol=0)


def _compiled_output_matches_lut_forward(case, frontend, forward_given_codes) -> np.ndarray:
    """Compile the case's plan (and a copy tapping its codes); the output equals the LUT model's
    forward run with the compiled codes. Returns the output."""
    source = case.dense if frontend == "torch" else str(case.onnx_path)
    compiled = lut_tvm.compile(source, str(case.plan_path), example_inputs=(case.x,))
    assert compiled.info.lut_layers == [l.name for l in case.plan.layers]
    y = compiled(case.x)
    assert y.shape == case.expected.shape
    tapped_y, codes = compile_with_codes(source, str(case.plan_path), example_inputs=(case.x,))(case.x)
    np.testing.assert_array_equal(tapped_y, y)  # tapping the codes changes nothing else
    np.testing.assert_allclose(y, forward_given_codes(case.lut, case.x, codes), **TOL)
    return y


@pytest.mark.parametrize("frontend", ["torch", "onnx"])
def test_compiled_plan_matches_lut_hard_forward(case, frontend, forward_given_codes):
    _compiled_output_matches_lut_forward(case, frontend, forward_given_codes)
    # the comparison can tell LUT from dense: the dense model's outputs are elsewhere
    with torch.no_grad():
        dense_y = case.dense(torch.from_numpy(case.x)).numpy()
    assert np.abs(dense_y - case.expected).max() > 1e-3


def test_plan_does_not_bind_the_original_model(cnn_case):
    with pytest.raises(PlanError, match="matches no weight"):
        lut_tvm.compile(cnn_case.teacher, cnn_case.plan, example_inputs=(cnn_case.x,))


# --------------------------------------------------------------------------- free tables


def _file_version(path) -> int:
    with np.load(path, allow_pickle=False) as npz:
        return json.loads(npz[META_KEY].tobytes().decode())["version"]


@pytest.fixture(scope="module")
def free_tables_case(digits, digits_cnn, kmeans_cnn, tmp_path_factory):
    """The k-means CNN with MADDNESS's free tables (``ridge_refit``, ``TableRefit.RIDGE``), as the
    accuracy benchmark's "k-means + ridge" row builds it."""
    lut = ridge_refit(copy.deepcopy(kmeans_cnn), digits_cnn, digits[0], TableRefit.RIDGE, 1.0, samples=256,
                      max_rows=4096)
    return Case("ridge", digits_cnn, lut, digits[1][:72], tmp_path_factory.mktemp("ridge"))


def test_free_tables_are_exported_into_a_version_2_plan(free_tables_case, cnn_case):
    case = free_tables_case
    assert _file_version(case.plan_path) == PLAN_VERSION_TABLES
    assert _file_version(cnn_case.plan_path) == PLAN_VERSION  # no free tables: still version 1
    loaded = lut_tvm.Plan.load(case.plan_path)
    layers = lut_layers(case.lut)
    assert [l.name for l in loaded.layers] == [n for n, _ in layers]
    teacher_params = dict(case.teacher.named_parameters())
    for plan_layer, (name, layer) in zip(loaded.layers, layers):
        assert layer.tables is not None
        np.testing.assert_array_equal(plan_layer.tables, layer.tables.detach().numpy())
        # the weight is unused by a free-table layer: the plan binds the original model's weight too
        original = teacher_params[f"{name}.weight"].detach().numpy()
        assert fingerprint(original.T if original.ndim == 2 else original) == plan_layer.weight_fingerprint


@pytest.mark.parametrize("frontend", ["torch", "onnx"])
def test_compiled_free_tables_plan_matches_lut_hard_forward(free_tables_case, frontend, forward_given_codes):
    case = free_tables_case
    _compiled_output_matches_lut_forward(case, frontend, forward_given_codes)
    # the comparison can tell the free tables from P.W of the same centroids and weights
    without = copy.deepcopy(case.lut)
    for _, layer in lut_layers(without):
        layer.set_tables(None)
    with torch.no_grad():
        kmeans_y = without.eval()(torch.from_numpy(case.x)).numpy()
    assert np.abs(kmeans_y - case.expected).max() > 1e-3
