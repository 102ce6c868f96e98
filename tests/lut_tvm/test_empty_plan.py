"""A plan without layers (what ``lut-tvm optimize`` writes when nothing fits the budget) compiles dense with
a warning naming the plan and the model; compiling without a plan does not warn."""

from __future__ import annotations

import logging

import numpy as np
from tiny_model import X, tiny

import lut_tvm
from lut_tvm.plan import Plan


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "lut_tvm"]


def test_empty_plan_file_compiles_dense_with_a_warning(tmp_path, caplog):
    model = tiny(0)
    path = Plan([]).save(tmp_path / "empty.npz")
    dense = lut_tvm.compile(model, None, example_inputs=(X,), tuning_logs=False)
    assert not _warnings(caplog)
    with caplog.at_level(logging.WARNING, logger="lut_tvm"):
        compiled = lut_tvm.compile(model, path, example_inputs=(X,), tuning_logs=False)
    (message,) = _warnings(caplog)
    assert str(path) in message and "every layer dense" in message and "Tiny" in message
    assert compiled.info.lut_layers == []
    np.testing.assert_allclose(compiled(X), dense(X), rtol=1e-6, atol=1e-6)


def test_empty_plan_object_warns_too(caplog):
    with caplog.at_level(logging.WARNING, logger="lut_tvm"):
        lut_tvm.compile(tiny(1), Plan([]), example_inputs=(X,), tuning_logs=False)
    (message,) = _warnings(caplog)
    assert message.startswith("the plan has no layers")
