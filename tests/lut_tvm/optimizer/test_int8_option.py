"""The int8 dense option of ``optimize``: offered for Linear layers only, its plan entry, its torch
forward equal to the NumPy int8 reference and to the compiled layer, and a search that may choose it
still meets the budget on the compiled model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from optimizer_settings import FAST

import lut_tvm
from lut_tvm.frontends import import_model
from lut_tvm.int8_reference import int8_dense
from lut_tvm.optimizer.evaluate import TorchEvaluator
from lut_tvm.optimizer.layers import (INT8_DENSE, INT8_DENSE_7BIT, CentroidBank, Int8Option, is_int8, model_layers,
                                      offered_int8, option_label)
from lut_tvm.plan import Plan

BUDGET = 1.5


def test_int8_offered_for_linear_layers_only(cnn_case):
    model, calibration, x, _ = cnn_case
    imported = import_model(model, (x[:8],))
    with_int8 = {l.name: l.sub_lens for l in model_layers(imported, FAST["sub_lens"], int8=True)}
    without = {l.name: l.sub_lens for l in model_layers(imported, FAST["sub_lens"])}
    offered = offered_int8()  # this machine's: 7-bit without VNNI
    assert {name for name, options in with_int8.items() if offered in options} == {"fc1", "fc2"}
    assert all(not any(is_int8(o) for o in options) for options in without.values())
    assert INT8_DENSE != 0 and option_label(INT8_DENSE) == "int8" and option_label(with_int8["fc1"][0]) == "V=4"
    assert INT8_DENSE != INT8_DENSE_7BIT and option_label(INT8_DENSE_7BIT) == "int8 7-bit"
    assert str(INT8_DENSE_7BIT) == "int8" and repr(INT8_DENSE_7BIT) == "int8-7bit"  # reports name the choice int8
    assert len({INT8_DENSE, INT8_DENSE_7BIT, Int8Option(7)}) == 2
    eight = model_layers(imported, FAST["sub_lens"], only={"fc1"}, int8=INT8_DENSE)[0].sub_lens
    assert INT8_DENSE in eight and INT8_DENSE_7BIT not in eight


@pytest.mark.parametrize("target,bits", [
    ({"kind": "llvm", "mcpu": "haswell"}, 7), ({"kind": "llvm", "mcpu": "skylake-avx512"}, 7),
    ({"kind": "llvm", "mcpu": "cascadelake"}, 8), ({"kind": "llvm", "mtriple": "aarch64-linux-gnu"}, 8),
    ({"kind": "llvm"}, 8)], ids=["avx2", "avx512bw", "vnni", "aarch64", "x86-64"])
def test_int8_offered_at_7_bits_only_without_vnni(target, bits):
    """7-bit activations where they get the exact vpmaddubsw kernel; 8 with VNNI (vpdpbusd) or none."""
    assert offered_int8(target).act_bits == bits


@pytest.mark.parametrize("option", [INT8_DENSE, INT8_DENSE_7BIT], ids=str)
def test_int8_plan_entry_and_torch_forward_match_the_reference(mlp_case, option):
    model, calibration, x, _ = mlp_case
    imported = import_model(model, (x[:16],))
    layers = model_layers(imported, FAST["sub_lens"], only={"fc2"}, int8=option)
    bank = CentroidBank(imported, layers, calibration, max_rows=FAST["max_rows"])
    entry = bank.layer_plan(layers[0], option)
    assert entry.is_int8 and entry.centroids is None and entry.weight_fingerprint == layers[0].site.fingerprint
    assert entry.act_bits == option.act_bits
    plan = Plan([entry])

    got = TorchEvaluator(model, x[:64]).outputs(plan)
    with torch.no_grad():  # the reference forward, by hand: fc2 through the NumPy int8 math
        hidden = torch.relu(model.fc1(torch.from_numpy(x[:64]))).numpy()
        fc2 = int8_dense(hidden, model.fc2.weight.numpy().T, model.fc2.bias.numpy(), option.act_bits)
        want = model.fc3(torch.relu(torch.from_numpy(fc2))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    compiled = lut_tvm.compile(model, plan, example_inputs=(x[:64],), tuning_logs=False)
    np.testing.assert_allclose(np.asarray(compiled(x[:64])), want, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        dense = model(torch.from_numpy(x[:64])).numpy()
    assert not np.allclose(want, dense, rtol=0, atol=1e-7), "int8 rounding should show in the outputs"


def test_optimize_with_int8_meets_the_budget(mlp_case):
    model, calibration, x, y = mlp_case
    result = lut_tvm.optimize(model, calibration, x, y, budget=BUDGET, peers=False, **FAST)
    int8_cands = [c for c in result.report["candidates"] if c["sub_len"] == "int8"]
    assert {c["layer"] for c in int8_cands} == {"fc1", "fc2", "fc3"}
    for cand in int8_cands:  # measured like any option: a loss alone where it saves time
        assert cand["status"] != "untried"
    assert result.report["original_metric"] - result.report["chosen_metric_compiled"] <= BUDGET
    for layer in result.plan.layers:
        assert layer.is_int8 == is_int8(result.choice[layer.name])
        if layer.is_int8:
            assert layer.act_bits == result.choice[layer.name].act_bits
    no_int8 = lut_tvm.optimize(model, calibration, x, y, budget=BUDGET, peers=False, int8=False, **FAST)
    assert not any(c["sub_len"] == "int8" for c in no_int8.report["candidates"])


def test_loss_margin_is_standard_errors_of_the_paired_differences():
    from lut_tvm.optimizer.evaluate import MARGIN_STANDARD_ERRORS, loss_margin

    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    reference = np.eye(2)[labels]  # the original: every sample right
    flipped = reference.copy()
    flipped[[0, 1]] = reference[[0, 1]][:, ::-1]  # two samples now wrong
    diffs = np.array([-100, -100, 0, 0, 0, 0, 0, 0], dtype=np.float64)
    assert MARGIN_STANDARD_ERRORS == 2.0
    assert loss_margin("accuracy", flipped, reference, labels) == pytest.approx(2 * diffs.std(ddof=1) / np.sqrt(8))
    assert loss_margin("accuracy", reference, reference, labels) == 0.0
    assert loss_margin("cosine", reference, reference, None) == pytest.approx(0.0, abs=1e-12)
