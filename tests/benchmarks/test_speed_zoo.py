"""The speed benchmark's model-zoo group: seeded random weights, runnable ONNX, a zoo table in speed.md."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from benchmarks.speed.zoo import ZOO_MODELS, light_model_path, zoo_input, zoo_lines, zoo_model


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_squeezenet_gets_seeded_weights_and_finite_logits():
    model, again, other = zoo_model("squeezenet", seed=0), zoo_model("squeezenet", seed=0), zoo_model("squeezenet", 1)
    assert not [n for n in model.graph.node if n.op_type in ("ConstantOfShape", "Softmax")]
    assert len(model.graph.input) == 1
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    conv1 = next(n for n in model.graph.node if n.op_type == "Conv").input[1]
    assert np.array_equal(weights[conv1], numpy_helper.to_array(
        next(i for i in again.graph.initializer if i.name == conv1)))
    assert not np.array_equal(weights[conv1], numpy_helper.to_array(
        next(i for i in other.graph.initializer if i.name == conv1)))
    fan_in = int(np.prod(weights[conv1].shape[1:]))
    assert weights[conv1].std() == pytest.approx(np.sqrt(2 / fan_in), rel=0.2)  # He-scaled
    logits = _run(model, zoo_input(model))
    assert logits.shape == (1, 1000, 1, 1) and np.isfinite(logits).all() and logits.std() > 0


def test_every_listed_architecture_ships_with_onnx():
    for name in ZOO_MODELS:
        assert light_model_path(name).is_file()
    with pytest.raises(FileNotFoundError, match="no such model-zoo file"):
        light_model_path("nonexistent_net")


def test_zoo_table_gives_ratios_against_onnx_runtime():
    cases = [{"kind": "zoo", "key": "resnet50", "name": "resnet50 (model zoo)",
              "schedules": {"tvm_dense": "default rules"}}]
    timings = {1: {"cases": {"resnet50": {"ms": {"tvm_dense": 50.0, "ort_fp32": 40.0, "ort_int8": 100.0},
                                          "relative_error_vs_pytorch": {"tvm_dense": 1e-6}}}}}
    row = next(line for line in zoo_lines(cases, timings) if line.startswith("| resnet50"))
    assert "| 50.00 | 40.00 | 100.00 | 0.80x | 2.00x | 1.0e-06 | default rules |" in row
    assert zoo_lines([{"kind": "models"}], timings) == []
