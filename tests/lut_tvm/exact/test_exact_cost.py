"""LUT-NA cost report: counts by hand on small weights, zero skipping, documented parameters."""

import math

import numpy as np
import pytest

from lut_tvm.exact import cost
from lut_tvm.exact import reference as ref


def _weight():
    wq = np.zeros((8, 2), np.int8)
    wq[[0, 3], 0] = [3, -2]  # column 0: group 0 only
    wq[[1, 6], 1] = [1, 7]  # column 1: groups 0 and 1
    return wq


def test_counts_by_hand_bit_planes():
    c = cost.layer_cost("fc", _weight(), bits=4, rows=3)
    assert c.macs == 3 * 8 * 2 and c.macs_nonzero == 3 * 4
    assert c.groups == 4 and c.groups_nonzero == 3
    assert c.lookups == 3 * 3 * 4  # rows x nonzero (group, column) x planes
    assert c.accumulate_adds == c.lookups
    assert c.combine_adds == 3 * 2 * 3 and c.shifts == 3 * 2 * 3  # b-1 per output
    assert c.tables == 3 * 2 and c.table_build_adds == 6 * 11
    assert c.table_bytes == math.ceil(2 * 16 * 10 / 8)  # 2 groups x 16 entries x 10 bits
    assert c.trad_table_bytes == 2 ** 12 * 12 / 8
    assert c.trad_lookups == c.mac_mults == c.macs_nonzero


def test_lookup_count_matches_reference_work():
    """The look-ups counted are the table reads the reference performs (skip lists, no padding)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((37, 9)).astype(np.float32)
    w[rng.random(w.shape) < 0.7] = 0
    wq, _ = ref.quantize_weight(w, 5)
    packed = ref.pack_exact(wq, 5)
    c = cost.layer_cost("l", wq, 5, rows=4)
    assert c.lookups == 4 * int(packed.nonzero_groups.sum()) * 5


def test_pruning_reduces_lookups_and_dense_baseline_option():
    rng = np.random.default_rng(1)
    wq = rng.integers(1, 7, size=(64, 8)).astype(np.int8)
    dense = cost.layer_cost("d", wq, 4, rows=2)
    wq[8:, :] = 0
    pruned = cost.layer_cost("p", wq, 4, rows=2)
    assert pruned.lookups == dense.lookups // 8 and pruned.macs == dense.macs
    every = cost.layer_cost("p", wq, 4, rows=2, skip_zero_macs=False)
    assert every.mac_mults == every.macs > pruned.mac_mults


@pytest.mark.parametrize("piece_bits,lookups_per_group", [(1, 8), (2, 4), (4, 2)])
def test_piece_widths_trade_lookups_for_tables(piece_bits, lookups_per_group):
    wq = np.ones((16, 1), np.int8)
    c = cost.layer_cost("x", wq, 8, rows=1, piece_bits=piece_bits)
    groups = 16 // (4 // piece_bits)
    assert c.lookups == groups * lookups_per_group
    assert cost.best_piece_bits(wq, 8, 1) in (1, 2, 4)


def test_parameters_are_documented_and_hit_their_sources():
    params = cost.CostParams()
    assert "Horowitz" in params.source and "order-of-magnitude" in params.source
    assert params.table_read_pj(8 * 1024, 64) == pytest.approx(10.0)
    assert params.table_read_pj(1024 * 1024, 64) == pytest.approx(100.0)
    assert params.table_read_pj(32, 16) < params.table_read_pj(2 ** 16, 16)
    assert params.mult_pj(8) == 0.2 and params.mult_pj(4) == pytest.approx(0.1)


def test_model_report_lists_layers_totals_and_ratios():
    rng = np.random.default_rng(2)
    layers = []
    for name, (d, n, bits) in {"conv1": (27, 8, 8), "fc": (40, 10, 3)}.items():
        wq, _ = ref.quantize_weight(rng.standard_normal((d, n)).astype(np.float32), bits)
        layers.append(cost.layer_cost(name, wq, bits, rows=5))
    model = cost.ModelCost(layers)
    text = cost.format_report(model)
    assert "conv1" in text and "fc" in text and "total" in text and "Horowitz" in text
    assert model.total("lookups") == sum(c.lookups for c in layers)
    ratios = model.ratios()
    assert ratios["exact_lut"] == pytest.approx(1.0) and ratios["traditional_lut"] > 1.0
    assert set(model.to_dict()["energy_pj"]) == set(cost.SCHEMES)


def test_model_summary_totals_and_ratios():
    rng = np.random.default_rng(2)
    layers = [cost.layer_cost(f"l{i}", rng.integers(-7, 8, size=(36, 8)).astype(np.int8), 4, rows=5)
              for i in range(3)]
    model = cost.ModelCost(layers)
    summary = model.summary()
    assert summary["lookups"] == sum(c.lookups for c in layers)
    assert summary["adds"] == sum(c.table_build_adds + c.accumulate_adds + c.combine_adds for c in layers)
    assert summary["trad_table_bytes"] == 3 * 2 ** 12 * 12 / 8
    assert summary["table_bytes_ratio_trad"] == pytest.approx(summary["trad_table_bytes"] / summary["table_bytes"])
    assert summary["energy_ratio_trad"] == pytest.approx(
        sum(c.energy_pj["traditional_lut"] for c in layers) / sum(c.energy_pj["exact_lut"] for c in layers))
    assert summary["energy_ratio_trad"] > 1
