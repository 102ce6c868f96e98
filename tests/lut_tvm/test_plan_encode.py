"""Plan version 6: a LUT layer's ``encode`` (float | int8): round trip, refusal by an older reader
and in an older file, and the layers that may not carry it, each named by layer and field."""

import json

import numpy as np
import pytest

from lut_tvm import plan as plan_module
from lut_tvm.errors import PlanError
from lut_tvm.npz_meta import META_KEY
from lut_tvm.plan import PLAN_VERSION_ENCODE, PLAN_VERSION_MODES, EncodeMode, LayerPlan, Plan
from lut_tvm.weights import LayerKind, fingerprint
from plan_files import assert_load_refused, rewrite

RNG = np.random.default_rng(0)
DENSE_W = RNG.standard_normal((12, 5)).astype(np.float32)
OTHER_W = RNG.standard_normal((6, 8)).astype(np.float32)


def _plan() -> Plan:
    int8 = LayerPlan("fc1", LayerKind.DENSE, DENSE_W.shape, fingerprint(DENSE_W),
                     RNG.standard_normal((4, 16, 3)).astype(np.float32), encode=EncodeMode.INT8)
    flt = LayerPlan("fc2", LayerKind.DENSE, OTHER_W.shape, fingerprint(OTHER_W),
                    RNG.standard_normal((3, 16, 2)).astype(np.float32))
    return Plan([int8, flt], provenance={"tool": "test"})


def _meta(path):
    with np.load(path, allow_pickle=False) as npz:
        return json.loads(npz[META_KEY].tobytes().decode())


def test_round_trip_is_version_6(tmp_path):
    plan = _plan()
    assert plan.version == PLAN_VERSION_ENCODE
    path = plan.save(tmp_path / "p.npz")
    meta = _meta(path)
    assert meta["version"] == PLAN_VERSION_ENCODE
    assert [entry["encode"] for entry in meta["layers"]] == ["int8", "float"]
    loaded = Plan.load(path)
    assert [layer.encode for layer in loaded.layers] == [EncodeMode.INT8, EncodeMode.FLOAT]
    np.testing.assert_array_equal(loaded.layers[0].centroids, plan.layers[0].centroids)


def test_float_only_plan_keeps_its_older_version(tmp_path):
    plan = _plan()
    plan.layers[0].encode = EncodeMode.FLOAT
    assert plan.version < PLAN_VERSION_ENCODE
    assert "encode" not in _meta(plan.save(tmp_path / "p.npz"))["layers"][0]
    assert Plan.load(tmp_path / "p.npz").layers[0].encode is EncodeMode.FLOAT


def test_older_reader_refuses_version_6(tmp_path, monkeypatch):
    path = _plan().save(tmp_path / "p.npz")
    monkeypatch.setattr(plan_module, "SUPPORTED_VERSIONS", tuple(range(1, PLAN_VERSION_MODES + 1)))
    with pytest.raises(PlanError, match="version"):
        Plan.load(path)


@pytest.mark.parametrize("change,message", [
    (lambda meta: meta.update(version=PLAN_VERSION_MODES),
     r"layer 'fc1': field 'encode' int8 needs plan version 6, but the file is version 5"),
    (lambda meta: meta["layers"][0].update(encode="int4"), r"layer 'fc1': field 'encode' is 'int4'"),
])
def test_bad_encode_in_a_file_is_named(tmp_path, change, message):
    assert_load_refused(_plan(), tmp_path, lambda meta, _arrays: change(meta), message)


def test_layers_that_cannot_have_the_int8_encode(tmp_path):
    conv_w = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
    conv = LayerPlan("conv", LayerKind.CONV2D, conv_w.shape, fingerprint(conv_w),
                     RNG.standard_normal((2, 16, 9)).astype(np.float32), encode=EncodeMode.INT8)
    with pytest.raises(PlanError, match=r"plan layer 'conv': field 'encode' is int8, but the layer is conv2d"):
        Plan([conv]).save(tmp_path / "c.npz")
    int8_dense = LayerPlan.int8_dense("fc", DENSE_W.shape, fingerprint(DENSE_W))
    int8_dense.encode = EncodeMode.INT8
    with pytest.raises(PlanError, match=r"plan layer 'fc': field 'encode' must be absent in mode int8_dense"):
        Plan([int8_dense]).save(tmp_path / "d.npz")
