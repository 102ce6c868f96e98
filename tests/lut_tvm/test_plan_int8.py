"""Plan versions 5 and 7: int8 dense layers (``LayerMode.INT8_DENSE``, 7-bit activations in 7) beside LUT layers: round trip,
refusal by an older reader, and every malformed int8 entry named by layer and field."""

import json

import numpy as np
import pytest

from lut_tvm import plan as plan_module
from lut_tvm.errors import PlanError
from lut_tvm.npz_meta import META_KEY
from lut_tvm.plan import PLAN_VERSION_ACT_BITS, PLAN_VERSION_GROUPS, PLAN_VERSION_MODES, LayerMode, LayerPlan, Plan
from lut_tvm.weights import LayerKind, fingerprint
from plan_files import assert_load_refused, read_arrays, rewrite

RNG = np.random.default_rng(0)
DENSE_W = RNG.standard_normal((12, 5)).astype(np.float32)
OTHER_W = RNG.standard_normal((5, 8)).astype(np.float32)


def _mixed_plan() -> Plan:
    lut = LayerPlan("fc1", LayerKind.DENSE, DENSE_W.shape, fingerprint(DENSE_W),
                    RNG.standard_normal((4, 16, 3)).astype(np.float32))
    return Plan([lut, LayerPlan.int8_dense("fc2", OTHER_W.shape, fingerprint(OTHER_W))],
                provenance={"tool": "test"})


def test_round_trip_is_version_5(tmp_path):
    plan = _mixed_plan()
    assert plan.version == PLAN_VERSION_MODES
    path = plan.save(tmp_path / "p.npz")
    arrays = read_arrays(path)
    assert sorted(arrays) == [META_KEY, "layer0.centroids"]  # no array for the int8 layer
    meta = json.loads(arrays[META_KEY].tobytes().decode())
    assert meta["version"] == PLAN_VERSION_MODES
    assert [entry["mode"] for entry in meta["layers"]] == ["lut", "int8_dense"]
    loaded = Plan.load(path)
    assert [layer.mode for layer in loaded.layers] == [LayerMode.LUT, LayerMode.INT8_DENSE]
    int8 = loaded.layers[1]
    assert int8.is_int8 and int8.centroids is None and int8.tables is None
    assert (int8.name, int8.kind, int8.weight_shape, int8.weight_fingerprint) == (
        "fc2", LayerKind.DENSE, OTHER_W.shape, fingerprint(OTHER_W))
    np.testing.assert_array_equal(loaded.layers[0].centroids, plan.layers[0].centroids)


def test_lut_only_plan_keeps_its_older_version(tmp_path):
    plan = _mixed_plan()
    plan.layers.pop()
    assert plan.version < PLAN_VERSION_MODES
    assert "mode" not in json.loads(read_arrays(plan.save(tmp_path / "p.npz"))[META_KEY].tobytes())["layers"][0]


def test_older_reader_refuses_version_5(tmp_path, monkeypatch):
    path = _mixed_plan().save(tmp_path / "p.npz")
    monkeypatch.setattr(plan_module, "SUPPORTED_VERSIONS", tuple(range(1, PLAN_VERSION_GROUPS + 1)))
    with pytest.raises(PlanError, match="version"):
        Plan.load(path)


def test_int8_mode_in_an_older_version_is_refused(tmp_path):
    path = _mixed_plan().save(tmp_path / "p.npz")
    rewrite(path, lambda meta, _arrays: meta.update(version=PLAN_VERSION_GROUPS))
    with pytest.raises(PlanError, match=r"layer 'fc2': field 'mode' int8_dense needs plan version 5"):
        Plan.load(path)


@pytest.mark.parametrize("change,message", [
    (lambda meta, arrays: meta["layers"][1].update(mode="int4"), r"layer 'fc2': field 'mode' is 'int4'"),
    (lambda meta, arrays: arrays.update({"layer1.centroids": np.zeros((1, 2, 8), np.float32)}),
     r"layer 'fc2': mode int8_dense has no 'layer1.centroids'"),
    (lambda meta, arrays: meta["layers"][1].update(num_centroids=16), r"has no 'num_centroids'"),
    (lambda meta, arrays: meta["layers"][1].update(kind="conv2d", weight_shape=[8, 5, 1, 1]),
     r"layer 'fc2': field 'mode' is int8_dense, but the layer is conv2d"),
])
def test_malformed_int8_entry_named(tmp_path, change, message):
    assert_load_refused(_mixed_plan(), tmp_path, change, message)


def test_int8_layer_with_centroids_rejected_on_save(tmp_path):
    plan = _mixed_plan()
    plan.layers[1].centroids = np.zeros((1, 16, 5), np.float32)
    with pytest.raises(PlanError, match=r"plan layer 'fc2': field 'centroids' must be absent in mode int8_dense"):
        plan.save(tmp_path / "p.npz")


def test_lut_layer_still_needs_centroids():
    layer = LayerPlan("fc1", LayerKind.DENSE, DENSE_W.shape, fingerprint(DENSE_W), None)
    with pytest.raises(PlanError, match="field 'centroids' must be a 3-D array"):
        layer.validate()


def _seven_bit_plan() -> Plan:
    plan = _mixed_plan()
    plan.layers[1] = LayerPlan.int8_dense("fc2", OTHER_W.shape, fingerprint(OTHER_W), act_bits=7)
    return plan


def test_7bit_round_trip_is_version_7(tmp_path):
    plan = _seven_bit_plan()
    assert plan.version == PLAN_VERSION_ACT_BITS
    path = plan.save(tmp_path / "p.npz")
    meta = json.loads(read_arrays(path)[META_KEY].tobytes().decode())
    assert meta["version"] == PLAN_VERSION_ACT_BITS and meta["layers"][1]["act_bits"] == 7
    assert "act_bits" not in meta["layers"][0]  # a LUT layer has none
    loaded = Plan.load(path)
    assert loaded.layers[1].is_int8 and loaded.layers[1].act_bits == 7 and loaded.layers[0].act_bits == 8


def test_8bit_int8_plan_stays_version_5_and_loads_as_8(tmp_path):
    path = _mixed_plan().save(tmp_path / "p.npz")
    meta = json.loads(read_arrays(path)[META_KEY].tobytes().decode())
    assert meta["version"] == PLAN_VERSION_MODES and "act_bits" not in meta["layers"][1]
    assert Plan.load(path).layers[1].act_bits == 8


def test_older_reader_refuses_7bit_plan(tmp_path, monkeypatch):
    path = _seven_bit_plan().save(tmp_path / "p.npz")
    monkeypatch.setattr(plan_module, "SUPPORTED_VERSIONS", tuple(range(1, PLAN_VERSION_ACT_BITS)))
    with pytest.raises(PlanError, match="version 7"):
        Plan.load(path)


@pytest.mark.parametrize("change,message", [
    (lambda meta, arrays: meta.update(version=PLAN_VERSION_MODES),
     r"layer 'fc2': field 'act_bits' 7 needs plan version 7, but the file is version 5"),
    (lambda meta, arrays: meta["layers"][1].update(act_bits=4), r"layer 'fc2': field 'act_bits' is 4, not one of \[7, 8\]"),
    (lambda meta, arrays: meta["layers"][1].update(act_bits="7"), r"field 'act_bits' is '7'"),
    (lambda meta, arrays: meta["layers"][1].update(act_bits=True), r"field 'act_bits' is True"),
])
def test_malformed_act_bits_named(tmp_path, change, message):
    assert_load_refused(_seven_bit_plan(), tmp_path, change, message)


def test_act_bits_checked_on_save(tmp_path):
    plan = _seven_bit_plan()
    plan.layers[1].act_bits = 6
    with pytest.raises(PlanError, match=r"plan layer 'fc2': field 'act_bits' is 6"):
        plan.save(tmp_path / "p.npz")
    plan = _mixed_plan()
    plan.layers[0].act_bits = 7
    with pytest.raises(PlanError, match=r"plan layer 'fc1': field 'act_bits' must be absent in mode lut"):
        plan.save(tmp_path / "p.npz")
