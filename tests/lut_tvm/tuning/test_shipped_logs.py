"""The shipped tuning log still schedules every function of the model it was tuned for (the demo
CNN at batch 72 with a k-means plan), and the tuned build computes what the default rules do.

A kernel change that alters a tuned PrimFunc makes its records stop matching: this test says so
before the shipped log silently goes stale (re-tune as ``tuning_logs/README.md`` describes).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import lut_tvm
from lut_tvm.demo import EVAL_BATCH, digits_cnn, load_digits_split
from lut_tvm.planner import PlanPolicy, build_kmeans_plan
from lut_tvm.targets import host_cpu_flags

pytestmark = pytest.mark.filterwarnings(
    "ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def demo_case():
    """The seeded demo CNN, its k-means plan and one evaluation batch (as the log was tuned)."""
    torch.manual_seed(0)
    model = digits_cnn().eval()
    x_train, x_test, _, _ = load_digits_split(0)
    x = x_test[:EVAL_BATCH]
    plan = build_kmeans_plan(model, x_train, PlanPolicy(seed=0), example_inputs=(x,))
    return model, plan, x


def test_shipped_avx512_log_schedules_every_function_of_the_demo_cnn(demo_case):
    model, plan, x = demo_case
    tuned = lut_tvm.compile(model, plan, target="x86-avx512", example_inputs=(x,))
    said = re.search(r"\((\d+) of (\d+) functions\)$", tuned.info.tuning_log)
    assert said, f"no shipped log applied: {tuned.info.tuning_log!r}"
    applied, total = map(int, said.groups())
    assert applied == total > 0, tuned.info.tuning_log
    if not {"avx512f", "avx512bw"} <= set(host_cpu_flags()):
        pytest.skip("this CPU cannot run x86-avx512 code: compiled only")
    untuned = lut_tvm.compile(model, plan, target="x86-avx512", example_inputs=(x,),
                              tuning_logs=False)
    assert untuned.info.tuning_log == ""
    np.testing.assert_allclose(tuned(x), untuned(x), rtol=1e-5, atol=1e-5)
