"""The trained extension: a layer over budget as an untrained (k-means) LUT is trained into the plan and kept
when the compiled plan then meets the budget on the eval data (checked here with NumPy on a separate
compile), and rejected when it does not; the candidates tried are one option per layer, best score first."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import train
from torch import nn

import lut_tvm
from lut_tvm.optimizer.evaluate import MARGIN_STANDARD_ERRORS, loss_margin, metric_value
from lut_tvm.optimizer.report import _extend_lines
from lut_tvm.optimizer.search import Candidate
from lut_tvm.optimizer.trained_extend import KEPT, REJECTED, ExtendSetup, extend_trained, extension_order, with_layer
from lut_tvm.targets import resolve_target
from lut_tvm.train import set_mode

BATCH = 16  # the eval batch of the extension tests (the optimize test compiles at its own)
LAYER, V = "2", 8  # the second Conv1d (D = 8 x 3 = 24): three 8-long codebooks


class Metrics:
    """The metric interface ``extend_trained`` reads (``api._Metrics``'s), on the original's outputs."""

    def __init__(self, model, x, y):
        with torch.no_grad():
            self.reference = model(torch.from_numpy(x)).numpy()
        self.labels = y
        self.original = metric_value("accuracy", self.reference, self.reference, y)

    def of_outputs(self, outputs):
        return metric_value("accuracy", outputs, self.reference, self.labels)

    def margin_of_outputs(self, outputs):
        return loss_margin("accuracy", outputs, self.reference, self.labels)


@pytest.fixture(scope="module")
def conv1d_case(digits):
    """``(model, setup)``: a seeded Conv1d net on the digits read as 64-sample signals."""
    x_train, x_test, y_train, y_test = digits
    x_train, x_test = x_train.reshape(len(x_train), 1, 64), x_test.reshape(len(x_test), 1, 64)
    torch.manual_seed(0)
    model = train(nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(), nn.Conv1d(8, 16, 3, stride=2, padding=1),
                                nn.ReLU(), nn.Flatten(), nn.Linear(16 * 32, 10)), x_train, y_train, 15)
    setup = ExtendSetup(model, x_train[:512], (x_train, y_train), x_test, resolve_target("native"), BATCH,
                        Metrics(model, x_test, y_test), epochs=2)
    return model, setup


def compiled_outputs(model, plan, x):
    """``(outputs, samples)`` of ``model`` compiled with ``plan`` by ``lut_tvm.compile`` on the whole batches of ``x``."""
    compiled = lut_tvm.compile(model, plan, example_inputs=(x[:BATCH],), tuning_logs=False)
    usable = len(x) - len(x) % BATCH
    outputs = np.concatenate([np.asarray(compiled(x[i : i + BATCH])) for i in range(0, usable, BATCH)])
    return outputs, usable


def test_a_layer_over_budget_untrained_is_trained_into_the_plan(conv1d_case):
    original, setup = conv1d_case
    budget = 2.5
    untrained = with_layer(original, LAYER, V, setup.calibration, 0)
    set_mode(untrained, "hard")  # the compiled kernels' numerics (codes, INT8 tables), without a compile
    with torch.no_grad():
        outputs = untrained(torch.from_numpy(setup.eval_x)).numpy()
    metrics = setup.metrics
    untrained = metrics.original - metrics.of_outputs(outputs) + metrics.margin_of_outputs(outputs)
    assert untrained > budget, "premise: the k-means LUT alone breaks the budget"
    cand = Candidate(LAYER, V, saving_ms=0.01, loss_alone=untrained)
    result = extend_trained(setup, None, {}, [cand], budget, max_layers=1)
    assert result.choice == {LAYER: V} and cand.status == KEPT
    assert [row["layer"] for row in result.rows] == [LAYER] and result.rows[0]["kept"]
    assert [(layer.name, layer.sub_vector_len) for layer in result.plan.layers] == [(LAYER, V)]
    assert f"| {LAYER} | V={V} | 0.0100 |" in "\n".join(_extend_lines(result.rows))  # the report's section
    # the plan binds to the trained model's weights: compiled apart, its loss plus two standard errors of the
    # per-sample differences (NumPy here) meets the budget on the eval data
    x, y = setup.eval_x, setup.metrics.labels
    outputs, usable = compiled_outputs(result.model, result.plan, x)
    with torch.no_grad():
        reference = original(torch.from_numpy(x[:usable])).numpy()
    ours, theirs = (outputs.argmax(-1) == y[:usable]) * 100.0, (reference.argmax(-1) == y[:usable]) * 100.0
    guarded = theirs.mean() - ours.mean() + MARGIN_STANDARD_ERRORS * np.std(ours - theirs, ddof=1) / np.sqrt(usable)
    assert guarded <= budget + 100.0 / usable  # the last partial batch is left out here


def test_a_layer_that_does_not_fit_after_training_is_rejected(conv1d_case):
    _, setup = conv1d_case
    cand = Candidate(LAYER, V, saving_ms=0.01, loss_alone=3.0)
    result = extend_trained(setup, None, {}, [cand], budget=0.25, max_layers=1)
    row = result.rows[0]
    assert not row["kept"] and row["guarded_loss"] > 0.25 and cand.status == REJECTED
    assert result.choice == {} and result.plan is None and result.model is None


def test_extension_order_takes_one_option_per_layer_best_score_first():
    cands = [Candidate("a", 4, 0.2, loss_alone=2.0), Candidate("a", 8, 0.3, loss_alone=1.5),
             Candidate("b", 4, 0.5, loss_alone=1.0), Candidate("c", 4, -0.1, loss_alone=0.1),
             Candidate("d", 4, 0.9, loss_alone=0.5)]
    order = extension_order(cands, {"d": 4}, num_centroids=16)
    assert [(c.layer, c.sub_len) for c in order] == [("b", 4), ("a", 8)]
    assert extension_order(cands, {}, num_centroids=16)[0].layer == "d"
    with pytest.raises(lut_tvm.LutTvmError, match="needs a torch module"):
        extend_trained(ExtendSetup("model.onnx", None, None, None, None, 1, None, 1), None, {}, cands, 1.0, 1)


def test_optimize_extends_a_fine_tuned_plan(mlp_case, digits):
    """Through ``optimize``: the trained extension starts from the fine-tuned plan's trained LUT model, a layer is
    in the plan returned only if kept, and the plan (bound to ``result.model``) meets the budget compiled apart."""
    model, calibration, x, y = mlp_case
    budget = 2.5
    result = lut_tvm.optimize(model, calibration, x, y, budget=budget, finetune=1, finetune_data=(calibration, digits[2]),
                              finetune_extend=1, sub_lens=(16,), timing_number=3, timing_repeat=2, max_rows=512,
                              peers=False, int8=False, refit="none")
    rows = result.report["finetune_extend"]
    # premises: the search chose a LUT layer (fine-tuned), and left one the extension tried from its trained model
    assert result.report["finetune"] is not None and len(rows) == 1
    assert all(row["layer"] not in result.report["choice"] or row["kept"] for row in rows)
    batch = result.report["batch"]
    outputs, usable = compiled_outputs(result.model if result.model is not None else model, result.plan, x)
    with torch.no_grad():
        reference = model(torch.from_numpy(x[:usable])).numpy()
    assert (reference.argmax(-1) == y[:usable]).mean() * 100 - (outputs.argmax(-1) == y[:usable]).mean() * 100 \
        <= budget + 100.0 / usable and batch > 0
