"""The optimizer's cost model: a plan's predicted latency is the dense model less its layers' kernel savings,
never below zero when the per-layer kernels (timed at other moments) add up to more than the whole model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lut_tvm.optimizer.latency import CostModel


class _Timer:
    """Kernel times by layer: ``(dense ms, LUT ms at V = 4)``."""

    def __init__(self, times):
        self.times = times

    def time_ms(self, site, centroids, int8=False):
        return self.times[site][0 if centroids is None else 1]


def _cost(times, dense_model_ms) -> CostModel:
    layers = [SimpleNamespace(name=name, site=name, sub_lens=(4,)) for name in times]
    bank = SimpleNamespace(centroids=lambda layer, sub_len: object())
    return CostModel(_Timer(times), layers, bank, dense_model_ms)


def test_prediction_is_dense_less_savings_when_the_kernels_fit_in_the_model():
    cost = _cost({"a": (1.0, 0.25), "b": (2.0, 1.5)}, dense_model_ms=4.0)
    assert cost.saving_ms("a", 4) == pytest.approx(0.75)
    assert cost.predict_ms({"a": 4, "b": 4}) == pytest.approx(4.0 - 0.75 - 0.5)
    assert cost.predict_ms({}) == pytest.approx(4.0)


def test_prediction_stays_positive_and_ordered_when_the_kernels_add_up_to_more():
    cost = _cost({"a": (3.0, 0.5), "b": (3.0, 0.5)}, dense_model_ms=4.0)  # 6 ms of layers in a 4 ms model
    both, one = cost.predict_ms({"a": 4, "b": 4}), cost.predict_ms({"a": 4})
    assert both == pytest.approx(4.0 - 5.0 * 4.0 / 6.0)
    assert 0 < both < one < cost.predict_ms({})
