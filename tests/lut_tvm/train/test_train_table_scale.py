"""Per-column table scales through training: convert carries the policy's ``table_quant`` into the
LUT layers, export_plan writes it (plan format version 3), and the compiled model reproduces the
LUT model's hard forward (same codes, same per-column INT8 tables and scales)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import lut_tvm
from lut_tvm.npz_meta import META_KEY
from lut_tvm.plan import PLAN_VERSION_TABLE_QUANT, Plan, TableQuant
from lut_tvm.policy import PlanPolicy
from lut_tvm.testing import compile_with_codes
from lut_tvm.train import LutConfig, convert, export_plan, lut_layers, to_dense_model

pytestmark = pytest.mark.filterwarnings("ignore:Renaming name:UserWarning")

PER_COLUMN = TableQuant.INT8_PER_COLUMN
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _mlp():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


@pytest.fixture(scope="module")
def per_column_mlp(digits):
    x_train, x_test = (a.reshape(len(a), -1) for a in digits[:2])
    teacher = _mlp()
    lut = convert(teacher, LutConfig(policy=PlanPolicy(max_rows=1024, table_quant=PER_COLUMN)), x_train)
    return teacher, lut, x_test[:72]


def test_convert_and_export_carry_per_column(per_column_mlp, tmp_path):
    _, lut, _ = per_column_mlp
    assert [l.table_quant for _, l in lut_layers(lut)] == [PER_COLUMN, PER_COLUMN]
    plan = export_plan(lut, tmp_path / "plan.npz")
    with np.load(tmp_path / "plan.npz", allow_pickle=False) as npz:
        assert json.loads(npz[META_KEY].tobytes().decode())["version"] == PLAN_VERSION_TABLE_QUANT
    assert [l.table_quant for l in Plan.load(tmp_path / "plan.npz").layers] == [PER_COLUMN] * 2
    assert [l.table_quant for l in plan.layers] == [PER_COLUMN] * 2


def test_compiled_per_column_model_matches_hard_forward(per_column_mlp, tmp_path, forward_given_codes):
    _, lut, x = per_column_mlp
    plan_path = tmp_path / "plan.npz"
    export_plan(lut, plan_path)
    dense = to_dense_model(lut)
    compiled = lut_tvm.compile(dense, str(plan_path), example_inputs=(x,))
    assert compiled.info.lut_layers == [n for n, _ in lut_layers(lut)]
    y = compiled(x)
    with torch.no_grad():
        expected = lut.eval()(torch.from_numpy(x)).numpy()
        for _, layer in lut_layers(lut):
            layer.table_quant = TableQuant.INT8_PER_LAYER
        per_layer = lut(torch.from_numpy(x)).numpy()
        for _, layer in lut_layers(lut):
            layer.table_quant = PER_COLUMN
    tapped_y, codes = compile_with_codes(dense, str(plan_path), example_inputs=(x,))(x)
    np.testing.assert_array_equal(tapped_y, y)  # tapping the codes changes nothing else
    np.testing.assert_allclose(y, forward_given_codes(lut, x, codes), **TOL)
    # the comparison can tell per-column from per-layer scales
    assert np.abs(per_layer - expected).max() > 1e-3
