"""Plan files: save/load round trip (version 1, and version 2 with free tables), every validation failure
names its layer and field, atomic save."""

import dataclasses
import json
import re

import numpy as np
import pytest

from lut_tvm.errors import PlanError
from lut_tvm.npz_meta import META_KEY
from lut_tvm.plan import (PLAN_FORMAT, PLAN_VERSION, PLAN_VERSION_TABLES, SUPPORTED_VERSIONS, LayerPlan, Plan,
                          PlanKind, TableQuant, plan_file_format)
from lut_tvm.weights import LayerKind, fingerprint

RNG = np.random.default_rng(0)
DENSE_W = RNG.standard_normal((12, 5)).astype(np.float32)  # D = 12
CONV_W = RNG.standard_normal((6, 2, 3, 3)).astype(np.float32)  # D = 18


def _layer(name, kind, weight, centroid_shape, seed, changes):
    fields = dict(
        name=name,
        kind=kind,
        weight_shape=weight.shape,
        weight_fingerprint=fingerprint(weight),
        centroids=np.random.default_rng(seed).standard_normal(centroid_shape).astype(np.float32),
    )
    fields.update(changes)
    return LayerPlan(**fields)


def dense_layer(**changes):
    return _layer("fc1", LayerKind.DENSE, DENSE_W, (4, 16, 3), 1, changes)


def conv_layer(**changes):
    return _layer("conv1", LayerKind.CONV2D, CONV_W, (6, 256, 3), 2, changes)


def valid_plan():
    return Plan([dense_layer(), conv_layer()], provenance={"tool": "test", "seed": 3})


def write_raw(path, meta, arrays):
    """Write a plan-shaped .npz without going through Plan.save (so nothing is validated)."""
    payload = dict(arrays)
    payload[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as handle:
        np.savez(handle, **payload)


def raw_meta(layers, **changes):
    """The metadata Plan.save would write: version 2 with per-layer 'tables' flags if a layer has tables."""
    with_tables = any(layer.tables is not None for layer in layers)
    meta = {
        "format": PLAN_FORMAT,
        "version": PLAN_VERSION_TABLES if with_tables else PLAN_VERSION,
        "provenance": {},
        "layers": [
            {
                "name": layer.name,
                "kind": getattr(layer.kind, "value", layer.kind),
                "weight_shape": list(layer.weight_shape),
                "weight_fingerprint": layer.weight_fingerprint,
                "table_quant": "int8_per_layer",
                **({"tables": layer.tables is not None} if with_tables else {}),
            }
            for layer in layers
        ],
    }
    meta.update(changes)
    return meta


def raw_arrays(layers):
    arrays = {f"layer{i}.centroids": layer.centroids for i, layer in enumerate(layers)}
    arrays.update({f"layer{i}.tables": layer.tables for i, layer in enumerate(layers) if layer.tables is not None})
    return arrays


def free_tables(layer, seed=5, dtype=np.float32):
    """Random real tables [C, K, N] of the right shape for ``layer``."""
    n = layer.weight_shape[1] if LayerKind(layer.kind) is LayerKind.DENSE else layer.weight_shape[0]
    return np.random.default_rng(seed).standard_normal((*layer.centroids.shape[:2], n)).astype(dtype)


def with_tables(layer, **changes):
    """``layer`` with free tables (overridable through ``changes``)."""
    tables = changes.pop("tables", free_tables(layer))
    layer.tables = tables
    for key, value in changes.items():
        setattr(layer, key, value)
    return layer


def read_meta(path):
    with np.load(path, allow_pickle=False) as npz:
        return json.loads(npz[META_KEY].tobytes().decode()), sorted(npz.files)


def test_round_trip(tmp_path):
    plan = valid_plan()
    path = plan.save(tmp_path / "sub" / "plan.npz")
    assert path == tmp_path / "sub" / "plan.npz" and path.is_file()
    loaded = Plan.load(path)
    assert loaded.provenance == {"tool": "test", "seed": 3}
    assert len(loaded.layers) == 2
    for got, want in zip(loaded.layers, plan.layers):
        assert got.name == want.name
        assert isinstance(got.kind, LayerKind) and got.kind is want.kind
        assert isinstance(got.table_quant, TableQuant)
        assert got.table_quant is TableQuant.INT8_PER_LAYER
        assert got.weight_shape == tuple(want.weight_shape)
        assert all(type(d) is int for d in got.weight_shape)
        assert got.weight_fingerprint == want.weight_fingerprint
        assert got.centroids.dtype == np.float32
        np.testing.assert_array_equal(got.centroids, want.centroids)
    assert set(loaded.by_fingerprint()) == {fingerprint(DENSE_W), fingerprint(CONV_W)}
    assert loaded.layers[1].num_centroids == 256


def test_plan_without_tables_is_written_as_version_1(tmp_path):
    meta, files = read_meta(valid_plan().save(tmp_path / "plan.npz"))
    assert meta["version"] == PLAN_VERSION == 1
    assert all("tables" not in entry for entry in meta["layers"])
    assert files == [META_KEY, "layer0.centroids", "layer1.centroids"]
    assert all(layer.tables is None for layer in Plan.load(tmp_path / "plan.npz").layers)


def test_round_trip_with_tables_is_version_2(tmp_path):
    plan = Plan([dense_layer(), with_tables(conv_layer())], provenance={"method": "kmeans"})
    path = plan.save(tmp_path / "plan.npz")
    meta, files = read_meta(path)
    assert meta["version"] == PLAN_VERSION_TABLES == 2
    assert [entry["tables"] for entry in meta["layers"]] == [False, True]
    assert files == [META_KEY, "layer0.centroids", "layer1.centroids", "layer1.tables"]
    loaded = Plan.load(path)
    assert loaded.layers[0].tables is None
    got = loaded.layers[1].tables
    assert got.dtype == np.float32 and got.shape == (6, 256, 6)
    np.testing.assert_array_equal(got, plan.layers[1].tables)
    np.testing.assert_array_equal(loaded.layers[1].centroids, plan.layers[1].centroids)
    assert loaded.provenance == {"method": "kmeans"}
    # dense tables: N is weight_shape[1]
    dense = Plan([with_tables(dense_layer())])
    loaded = Plan.load(dense.save(tmp_path / "dense.npz"))
    assert loaded.layers[0].tables.shape == (4, 16, 5)
    np.testing.assert_array_equal(loaded.layers[0].tables, dense.layers[0].tables)


def test_version_1_file_still_loads(tmp_path):
    """A file as lut_tvm wrote it before version 2 existed (no 'tables' anywhere)."""
    layers = [dense_layer(), conv_layer()]
    path = tmp_path / "plan.npz"
    write_raw(path, raw_meta(layers, version=1), raw_arrays(layers))
    loaded = Plan.load(path)
    assert [layer.name for layer in loaded.layers] == ["fc1", "conv1"]
    assert all(layer.tables is None for layer in loaded.layers)


# (meta/array edit of a raw file whose layer 1 'fc1' has tables, text expected in the message)
BAD_TABLE_FILES = {
    "v1_with_tables_array": (lambda meta, arrays: (meta.update(version=1),
                                                  [e.pop("tables") for e in meta["layers"]]), "version 1"),
    "v1_with_tables_field": (lambda meta, arrays: (meta.update(version=1), meta["layers"][0].pop("tables"),
                                                  arrays.pop("layer1.tables")), "version 1"),
    "flag_without_array": (lambda meta, arrays: arrays.pop("layer1.tables"), "'layer1.tables' is missing"),
    "array_without_flag": (lambda meta, arrays: meta["layers"][1].update(tables=False), "'layer1.tables' is there"),
    "flag_not_bool": (lambda meta, arrays: meta["layers"][1].update(tables=1), "not true or false"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLE_FILES))
def test_tables_inconsistent_with_the_metadata_rejected(tmp_path, case):
    edit, detail = BAD_TABLE_FILES[case]
    layers = [conv_layer(name="ok_layer"), with_tables(dense_layer())]
    meta, arrays = raw_meta(layers), raw_arrays(layers)
    edit(meta, arrays)
    path = tmp_path / "plan.npz"
    write_raw(path, meta, arrays)
    with pytest.raises(PlanError) as err:
        Plan.load(path)
    _assert_names(err, str(path), "'fc1'", "tables", detail)
    assert "ok_layer" not in str(err.value)


def test_string_kinds_are_saved_as_enums(tmp_path):
    plan = Plan([dense_layer(kind="dense", table_quant="int8_per_layer")])
    loaded = Plan.load(plan.save(tmp_path / "p.npz"))
    assert loaded.layers[0].kind is LayerKind.DENSE
    assert loaded.layers[0].table_quant is TableQuant.INT8_PER_LAYER


# (layer factory, field named in the message, extra text expected in the message)
BAD_LAYERS = {
    "c_times_v_not_d": (lambda: dense_layer(centroids=np.zeros((5, 16, 3), np.float32)), "centroids", "12"),
    "conv_c_times_v_not_d": (lambda: conv_layer(centroids=np.zeros((4, 16, 3), np.float32)), "centroids", "18"),
    "k_is_1": (lambda: dense_layer(centroids=np.zeros((4, 1, 3), np.float32)), "centroids", "K = 1"),
    "k_is_300": (lambda: dense_layer(centroids=np.zeros((4, 300, 3), np.float32)), "centroids", "K = 300"),
    "nan_centroids": (
        lambda: dense_layer(centroids=np.where(np.eye(4, 48, dtype=bool).reshape(4, 16, 3), np.nan, 0).astype(np.float32)),
        "centroids",
        "finite",
    ),
    "inf_centroids": (lambda: dense_layer(centroids=np.full((4, 16, 3), np.inf, np.float32)), "centroids", "finite"),
    "float64_centroids": (lambda: dense_layer(centroids=np.zeros((4, 16, 3), np.float64)), "centroids", "float64"),
    "2d_centroids": (lambda: dense_layer(centroids=np.zeros((4, 48), np.float32)), "centroids", "3-D"),
    "unknown_kind": (lambda: dense_layer(kind="lstm"), "kind", "lstm"),
    "dense_shape_rank": (lambda: dense_layer(weight_shape=(12, 5, 1)), "weight_shape", "2-D"),
    "conv_shape_rank": (lambda: conv_layer(weight_shape=(6, 18)), "weight_shape", "4-D"),
    "zero_dim": (lambda: dense_layer(weight_shape=(12, 0)), "weight_shape", "[12, 0]"),
    "table_quant": (lambda: dense_layer(table_quant="int4"), "table_quant", "int4"),
    "tables_wrong_n": (lambda: with_tables(dense_layer(), tables=np.zeros((4, 16, 6), np.float32)), "tables",
                       "[4, 16, 5]"),
    "tables_wrong_k": (lambda: with_tables(dense_layer(), tables=np.zeros((4, 8, 5), np.float32)), "tables",
                       "[4, 8, 5]"),
    "conv_tables_wrong_n": (lambda: with_tables(conv_layer(name="conv2"), tables=np.zeros((6, 256, 5), np.float32)),
                            "tables", "[6, 256, 6]"),
    "tables_2d": (lambda: with_tables(dense_layer(), tables=np.zeros((64, 5), np.float32)), "tables", "3-D"),
    "nan_tables": (lambda: with_tables(dense_layer(), tables=np.where(
        np.eye(64, 5, dtype=bool).reshape(4, 16, 5), np.nan, 0).astype(np.float32)), "tables", "finite"),
    "inf_tables": (lambda: with_tables(dense_layer(), tables=np.full((4, 16, 5), -np.inf, np.float32)), "tables",
                   "finite"),
    "float64_tables": (lambda: with_tables(dense_layer(), tables=np.zeros((4, 16, 5), np.float64)), "tables",
                       "float64"),
}


def _assert_names(err, *parts):
    message = str(err.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize("case", sorted(BAD_LAYERS))
def test_invalid_layer_rejected_on_save(tmp_path, case):
    make, field, detail = BAD_LAYERS[case]
    plan = Plan([conv_layer(name="ok_layer"), make()])
    path = tmp_path / "plan.npz"
    with pytest.raises(PlanError) as err:
        plan.save(path)
    bad_name = plan.layers[1].name
    _assert_names(err, repr(bad_name), f"'{field}'", detail)
    assert "ok_layer" not in str(err.value)
    # Nothing written, not even a temporary file.
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", sorted(BAD_LAYERS))
def test_invalid_layer_rejected_on_load(tmp_path, case):
    make, field, detail = BAD_LAYERS[case]
    layers = [conv_layer(name="ok_layer"), make()]
    path = tmp_path / "plan.npz"
    meta = raw_meta(layers)
    meta["layers"][1]["table_quant"] = getattr(layers[1].table_quant, "value", layers[1].table_quant)
    write_raw(path, meta, raw_arrays(layers))
    with pytest.raises(PlanError) as err:
        Plan.load(path)
    _assert_names(err, str(path), repr(layers[1].name), f"'{field}'", detail)


def test_duplicate_fingerprint(tmp_path):
    plan = Plan([dense_layer(name="first"), dense_layer(name="second")])
    with pytest.raises(PlanError) as err:
        plan.save(tmp_path / "plan.npz")
    _assert_names(err, "'first'", "'second'", "weight_fingerprint")
    assert list(tmp_path.iterdir()) == []

    path = tmp_path / "raw.npz"
    write_raw(path, raw_meta(plan.layers), raw_arrays(plan.layers))
    with pytest.raises(PlanError) as err:
        Plan.load(path)
    _assert_names(err, str(path), "'first'", "'second'", "weight_fingerprint")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(PlanError, match=re.escape(str(path))):
        Plan.load(path)
    with pytest.raises(PlanError, match="does not exist"):
        Plan.load(tmp_path)  # a directory is not a plan file either




@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"this is not an npz file at all", id="text"),
        pytest.param(b"PK\x03\x04 truncated zip", id="truncated_zip"),
    ],
)
def test_not_an_npz(tmp_path, content):
    path = tmp_path / "plan.npz"
    path.write_bytes(content)
    with pytest.raises(PlanError) as err:
        Plan.load(path)
    _assert_names(err, str(path))


def test_npy_file_named_npz(tmp_path):
    """A bare .npy array under a .npz name is 'not a readable .npz', not a TypeError."""
    path = tmp_path / "plan.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.zeros(3, np.float32))
    with pytest.raises(PlanError) as err:
        Plan.load(path)
    _assert_names(err, str(path))


def test_npz_without_metadata(tmp_path):
    path = tmp_path / "plan.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(PlanError) as err:
        Plan.load(path)
    _assert_names(err, str(path), META_KEY)


def test_metadata_not_json(tmp_path):
    path = tmp_path / "plan.npz"
    np.savez(path, **{META_KEY: np.frombuffer(b"{not json", dtype=np.uint8)})
    with pytest.raises(PlanError) as err:
        Plan.load(path)
    _assert_names(err, str(path), "JSON")


def test_wrong_format_string(tmp_path):
    layers = [dense_layer()]
    path = tmp_path / "plan.npz"
    write_raw(path, raw_meta(layers, format="someone.elses.plan"), raw_arrays(layers))
    with pytest.raises(PlanError) as err:
        Plan.load(path)
    _assert_names(err, str(path), "'format'", "someone.elses.plan")


@pytest.mark.parametrize("version", [max(SUPPORTED_VERSIONS) + 1, 0, "1", "2", True, 1.5, None])
def test_unsupported_version(tmp_path, version):
    layers = [dense_layer()]
    path = tmp_path / "plan.npz"
    write_raw(path, raw_meta(layers, version=version), raw_arrays(layers))
    with pytest.raises(PlanError) as err:
        Plan.load(path)
    _assert_names(err, str(path), "version", repr(version))


def test_missing_layer_field(tmp_path):
    layers = [dense_layer()]
    meta = raw_meta(layers)
    del meta["layers"][0]["weight_fingerprint"]
    path = tmp_path / "plan.npz"
    write_raw(path, meta, raw_arrays(layers))
    with pytest.raises(PlanError) as err:
        Plan.load(path)
    _assert_names(err, str(path), "'fc1'", "weight_fingerprint")


def test_missing_centroid_array(tmp_path):
    layers = [dense_layer()]
    path = tmp_path / "plan.npz"
    write_raw(path, raw_meta(layers), {})
    with pytest.raises(PlanError) as err:
        Plan.load(path)
    _assert_names(err, str(path), "'fc1'", "layer0.centroids")


def test_failed_save_keeps_existing_file(tmp_path):
    path = tmp_path / "plan.npz"
    valid_plan().save(path)
    before = path.read_bytes()
    bad = Plan([dense_layer(centroids=np.zeros((4, 300, 3), np.float32))])
    with pytest.raises(PlanError):
        bad.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.npz"]
    assert Plan.load(path).layers[0].num_centroids == 16


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "plan.npz"
    valid_plan().save(path)
    Plan([conv_layer()]).save(path)
    assert [layer.name for layer in Plan.load(path).layers] == ["conv1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.npz"]


def test_write_failure_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "plan.npz"
    valid_plan().save(path)
    before = path.read_bytes()

    def broken_savez(handle, **arrays):
        handle.write(b"PK\x03\x04partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError):
        valid_plan().save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old plan survives the failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.npz"]


# --------------------------------------------------------------------------- plan kinds


def _exact_plan():
    from lut_tvm.exact.plan import ExactLayerPlan, ExactPlan  # pylint: disable=import-outside-toplevel

    return ExactPlan([ExactLayerPlan.from_weight("fc1", LayerKind.DENSE, DENSE_W, 4, 0.1)])


def test_plan_file_format_tells_the_kinds_apart(tmp_path):
    """Each kind's file names its own format; an unreadable file has none (its loader says why)."""
    from lut_tvm.exact.plan import EXACT_PLAN_FORMAT  # pylint: disable=import-outside-toplevel

    assert plan_file_format(valid_plan().save(tmp_path / "lut.npz")) == PLAN_FORMAT
    assert plan_file_format(_exact_plan().save(tmp_path / "exact.npz")) == EXACT_PLAN_FORMAT
    (tmp_path / "text.npz").write_text("not a plan")
    assert plan_file_format(tmp_path / "text.npz") is None
    assert plan_file_format(tmp_path / "missing.npz") is None


def test_load_plan_reads_each_kind_from_its_file(tmp_path):
    """``compiler.load_plan`` loads either kind from its file, exactly as its own loader does."""
    from lut_tvm.compiler import load_plan  # pylint: disable=import-outside-toplevel
    from lut_tvm.exact.plan import ExactPlan  # pylint: disable=import-outside-toplevel

    lut = load_plan(str(valid_plan().save(tmp_path / "lut.npz")))
    assert type(lut) is Plan and [layer.name for layer in lut.layers] == ["fc1", "conv1"]
    np.testing.assert_array_equal(lut.layers[1].centroids, conv_layer().centroids)
    exact = load_plan(_exact_plan().save(tmp_path / "exact.npz"))
    assert type(exact) is ExactPlan and exact.bits_per_layer() == {"fc1": 4}
    np.testing.assert_array_equal(exact.layers[0].w_scale, _exact_plan().layers[0].w_scale)
    assert load_plan(None).layers == []
    (tmp_path / "text.npz").write_text("not a plan")
    with pytest.raises(PlanError, match=r"plan file '.*text\.npz'"):
        load_plan(tmp_path / "text.npz")


def test_both_kinds_share_the_plan_kind_checks():
    """``PlanKind``: layers by fingerprint, and a duplicate weight named with the kind's label."""
    exact = _exact_plan()
    assert isinstance(valid_plan(), PlanKind) and isinstance(exact, PlanKind)
    assert list(valid_plan().by_fingerprint()) == [fingerprint(DENSE_W), fingerprint(CONV_W)]
    exact.layers.append(dataclasses.replace(exact.layers[0], name="again"))
    with pytest.raises(PlanError, match=r"^exact plan layers 'fc1' and 'again' bind the same weight"):
        exact.validate()


def test_rewrite_stage_of_an_unknown_plan_kind_is_named():
    from lut_tvm.compiler import rewrite_passes  # pylint: disable=import-outside-toplevel

    class OtherPlan(Plan):
        """A plan kind the compiler has no rewrite stage for."""

    with pytest.raises(PlanError, match="no rewrite passes for plan kind OtherPlan"):
        rewrite_passes(OtherPlan([]))
