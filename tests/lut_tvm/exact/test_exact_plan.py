"""Exact (LUT-NA) plan files: round trip, binding by fingerprint, errors name layer and field."""

import json

import numpy as np
import pytest

from lut_tvm.errors import PlanError
from lut_tvm.exact import reference as ref
from lut_tvm.exact.plan import ExactLayerPlan, ExactPlan
from lut_tvm.npz_meta import META_KEY
from lut_tvm.plan import Plan
from lut_tvm.weights import LayerKind

RNG = np.random.default_rng(0)
DENSE_W = RNG.standard_normal((12, 5)).astype(np.float32)
CONV_W = RNG.standard_normal((6, 2, 3, 3)).astype(np.float32)


def _plan():
    return ExactPlan([
        ExactLayerPlan.from_weight("fc", LayerKind.DENSE, DENSE_W, 3, 0.05),
        ExactLayerPlan.from_weight("conv", LayerKind.CONV2D, CONV_W, 8, 0.1, piece_bits=4),
    ], provenance={"calibration": "test"})


def test_round_trip(tmp_path):
    path = _plan().save(tmp_path / "p.npz")
    loaded = ExactPlan.load(path)
    assert loaded.bits_per_layer() == {"fc": 3, "conv": 8}
    assert loaded.provenance == {"calibration": "test"}
    assert loaded.layers[1].kind is LayerKind.CONV2D and loaded.layers[1].piece_bits == 4
    np.testing.assert_array_equal(loaded.layers[0].w_scale, _plan().layers[0].w_scale)
    assert loaded.layers[0].act_scale == pytest.approx(0.05)


def test_quantized_weight_binds_by_fingerprint():
    layer = _plan().layers[1]
    wq = layer.quantized_weight(CONV_W)
    assert wq.shape == (18, 6) and np.abs(wq).max() == 127
    np.testing.assert_array_equal(wq, ref.quantize_weight(CONV_W.reshape(6, -1).T, 8)[0])
    with pytest.raises(PlanError, match="fingerprint"):
        layer.quantized_weight(CONV_W + 1)


@pytest.mark.parametrize("field,value,message", [
    ("bits", 9, "'bits'"), ("bits", 0, "'bits'"), ("piece_bits", 3, "'piece_bits'"),
    ("act_scale", 0.0, "'act_scale'"), ("w_scale", np.ones(4, np.float32), "'w_scale'"),
    ("kind", "pool", "'kind'"),
])
def test_invalid_fields_are_named(tmp_path, field, value, message):
    plan = _plan()
    setattr(plan.layers[0], field, value)
    with pytest.raises(PlanError, match=message) as err:
        plan.save(tmp_path / "bad.npz")
    assert "'fc'" in str(err.value)


def test_rejects_other_formats_and_versions(tmp_path):
    lutnn = Plan([]).save(tmp_path / "lutnn.npz")
    with pytest.raises(PlanError, match="field 'format' is 'lut_tvm.plan'"):
        ExactPlan.load(lutnn)
    path = _plan().save(tmp_path / "p.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays[META_KEY].tobytes().decode())
    meta["version"] = 99
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "v99.npz", **arrays)
    with pytest.raises(PlanError, match="version 99"):
        ExactPlan.load(tmp_path / "v99.npz")
    with pytest.raises(PlanError, match="does not exist"):
        ExactPlan.load(tmp_path / "missing.npz")


def test_duplicate_binding_rejected(tmp_path):
    plan = _plan()
    plan.layers[1] = ExactLayerPlan.from_weight("fc2", LayerKind.DENSE, DENSE_W, 4, 0.1)
    with pytest.raises(PlanError, match="bind the same weight"):
        plan.save(tmp_path / "dup.npz")
