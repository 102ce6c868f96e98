"""Per-output-column INT8 table scales: the NumPy reference, the plan format (version 3 and its
refusal by an older reader), the policy, the training forward, and a whole model compiled with a
per-column k-means plan against the NumPy reference forward (export_plan and the compiled LUT model
against its torch hard forward: ``train/test_train_table_scale.py``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from small_models import CNN, assert_matches_reference, cnn_reference, seeded

import lut_tvm
from lut_tvm import plan as plan_module
from lut_tvm import reference as ref
from lut_tvm.errors import PlanError
from lut_tvm.npz_meta import META_KEY, read_npz_with_meta
from lut_tvm.plan import (
    PLAN_FORMAT,
    PLAN_VERSION,
    PLAN_VERSION_TABLE_QUANT,
    PLAN_VERSION_TABLES,
    LayerPlan,
    Plan,
    TableQuant,
)
from lut_tvm.policy import PlanPolicy
from lut_tvm.testing import compile_with_codes
from lut_tvm.weights import LayerKind, fingerprint

PER_COLUMN = TableQuant.INT8_PER_COLUMN


def uneven_tables(seed=0, shape=(5, 16, 7)):
    """Real tables whose columns differ in magnitude by up to 1000x (as a layer's outputs do)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) * np.logspace(-3, 0, shape[-1])


# --------------------------------------------------------------------------- reference


def test_column_scale_is_each_column_quantized_alone():
    """Per column = the per-layer quantization of each column on its own (an independent path)."""
    tables = uneven_tables()
    levels, scale = ref.quantize_tables(tables, "column")
    assert levels.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (tables.shape[-1],)
    for n in range(tables.shape[-1]):
        alone_levels, alone_scale = ref.quantize_tables(tables[..., n : n + 1], "layer")
        np.testing.assert_array_equal(levels[..., n : n + 1], alone_levels)
        assert scale[n] == alone_scale
        assert scale[n] == np.float32(np.abs(tables[..., n]).max() / 127)
    # every column uses the whole INT8 range
    assert (np.abs(levels).reshape(-1, tables.shape[-1]).max(0) == 127).all()


def test_column_scale_error_is_below_the_layer_scale_error():
    tables = uneven_tables(1)
    errors = {}
    for granularity in ("layer", "column"):
        levels, scale = ref.quantize_tables(tables, granularity)
        error = np.abs(levels * scale.astype(np.float64) - tables)
        assert (error <= scale.astype(np.float64) / 2 * (1 + 1e-6)).all()  # round to nearest
        errors[granularity] = error.reshape(-1, tables.shape[-1]).max(0) / np.abs(tables).reshape(
            -1, tables.shape[-1]).max(0)
    # the smallest column is quantized to 0-1 levels by one layer scale, to 127 levels per column
    assert errors["column"].max() < 0.01 < errors["layer"].max()


def test_zero_column_gets_scale_one():
    tables = uneven_tables(2)
    tables[..., 3] = 0
    levels, scale = ref.quantize_tables(tables, "column")
    assert scale[3] == 1 and (levels[..., 3] == 0).all() and (scale[np.arange(7) != 3] < 1).all()


def test_default_granularity_is_unchanged_per_layer():
    tables = uneven_tables(3)
    levels, scale = ref.quantize_tables(tables)
    assert isinstance(scale, np.float32) and scale == np.float32(np.abs(tables).max() / 127)
    np.testing.assert_array_equal(levels, np.clip(np.rint(tables / (np.abs(tables).max() / 127)), -127, 127))


def test_unknown_granularity_is_refused():
    with pytest.raises(ValueError, match="'row'"):
        ref.quantize_tables(uneven_tables(), "row")


def test_lut_matmul_column_is_acc_times_scale_n_plus_bias():
    rng = np.random.default_rng(4)
    rows = rng.standard_normal((23, 12)).astype(np.float32)
    centroids = rng.standard_normal((3, 16, 4)).astype(np.float32)
    weight = (rng.standard_normal((12, 9)) * np.logspace(-2, 1, 9)).astype(np.float32)
    bias = rng.standard_normal(9).astype(np.float32)
    tables = ref.build_tables(centroids, weight)
    levels = np.stack([ref.quantize_tables(tables[..., n : n + 1])[0][..., 0] for n in range(9)], -1)
    scale = np.array([ref.quantize_tables(tables[..., n : n + 1])[1] for n in range(9)], np.float32)
    acc = ref.lookup_accumulate(ref.encode(rows, centroids), levels)
    got = ref.lut_matmul(rows, centroids, weight, bias, "column")
    np.testing.assert_array_equal(got, acc.astype(np.float32) * scale + bias)
    assert np.abs(got - ref.lut_matmul(rows, centroids, weight, bias)).max() > 0
    # conv: the same through im2col
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    conv_weight = rng.standard_normal((9, 3, 2, 2)).astype(np.float32)
    conv_cents = rng.standard_normal((3, 16, 4)).astype(np.float32)
    conv = ref.lut_conv2d(x, conv_cents, conv_weight, bias, padding=(1, 0, 0, 1), granularity="column")
    conv_rows, (batch, out_h, out_w) = ref.im2col_nchw(x, (2, 2), padding=(1, 0, 0, 1))
    flat = ref.lut_matmul(conv_rows, conv_cents, conv_weight.reshape(9, -1).T, bias, "column")
    np.testing.assert_array_equal(conv, flat.reshape(batch, out_h, out_w, 9).transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------- plan format


def _layer(table_quant=TableQuant.INT8_PER_LAYER, tables=False, seed=0):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((8, 6)).astype(np.float32)
    centroids = rng.standard_normal((2, 16, 4)).astype(np.float32)
    free = rng.standard_normal((2, 16, 6)).astype(np.float32) if tables else None
    return LayerPlan(f"fc{seed}", LayerKind.DENSE, weight.shape, fingerprint(weight), centroids,
                     table_quant=table_quant, tables=free)


def _file_meta(path):
    with np.load(path, allow_pickle=False) as npz:
        return json.loads(npz[META_KEY].tobytes().decode())


@pytest.mark.parametrize("tables", [False, True])
def test_per_column_plan_round_trips_as_version_3(tmp_path, tables):
    plan = Plan([_layer(PER_COLUMN, tables, 0), _layer(seed=1)])
    path = plan.save(tmp_path / "plan.npz")
    assert _file_meta(path)["version"] == PLAN_VERSION_TABLE_QUANT == plan.version
    loaded = Plan.load(path)
    assert [l.table_quant for l in loaded.layers] == [PER_COLUMN, TableQuant.INT8_PER_LAYER]
    assert all(isinstance(l.table_quant, TableQuant) for l in loaded.layers)
    for got, want in zip(loaded.layers, plan.layers):
        np.testing.assert_array_equal(got.centroids, want.centroids)
        assert (got.tables is None) == (want.tables is None)
        if want.tables is not None:
            np.testing.assert_array_equal(got.tables, want.tables)


def test_per_layer_plans_keep_versions_1_and_2(tmp_path):
    assert _file_meta(Plan([_layer()]).save(tmp_path / "a.npz"))["version"] == PLAN_VERSION
    assert _file_meta(Plan([_layer(tables=True)]).save(tmp_path / "b.npz"))["version"] == PLAN_VERSION_TABLES


def test_old_reader_refuses_version_3(tmp_path, monkeypatch):
    """A reader of versions 1-2 (this reader with version 3 taken out) names the file and version."""
    path = Plan([_layer(PER_COLUMN)]).save(tmp_path / "plan.npz")
    monkeypatch.setattr(plan_module, "SUPPORTED_VERSIONS", (PLAN_VERSION, PLAN_VERSION_TABLES))
    with pytest.raises(PlanError) as err:
        Plan.load(path)
    message = str(err.value)
    assert str(path) in message and "version 3 is not supported" in message and "1 or 2" in message
    # the container check itself, as any older lut_tvm calls it
    with pytest.raises(PlanError, match="version 3 is not supported"):
        read_npz_with_meta(path, "plan file", PLAN_FORMAT, (PLAN_VERSION, PLAN_VERSION_TABLES))


@pytest.mark.parametrize("version", [PLAN_VERSION, PLAN_VERSION_TABLES])
def test_per_column_field_in_an_older_version_is_refused(tmp_path, version):
    """A file that says version 1 or 2 but a per-column layer would be compiled wrongly by an older
    reader: it is refused, naming the layer, field and version."""
    path = Plan([_layer(PER_COLUMN)]).save(tmp_path / "plan.npz")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    meta = json.loads(arrays.pop(META_KEY).tobytes().decode())
    meta["version"] = version
    if version == PLAN_VERSION:
        del meta["layers"][0]["tables"]
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(PlanError) as err:
        Plan.load(path)
    for part in (str(path), "'fc0'", "'table_quant'", "int8_per_column", f"version {version}"):
        assert part in str(err.value)


def test_policy_carries_table_quant():
    policy = PlanPolicy(table_quant="int8_per_column")
    assert policy.table_quant is PER_COLUMN
    data = policy.to_dict()
    assert data["table_quant"] == "int8_per_column"
    assert PlanPolicy.from_dict(json.loads(json.dumps(data))).table_quant is PER_COLUMN
    assert PlanPolicy().table_quant is TableQuant.INT8_PER_LAYER
    with pytest.raises(PlanError, match="table_quant.*'int4'"):
        PlanPolicy(table_quant="int4")


# --------------------------------------------------------------------------- training forward


def test_training_forward_equals_reference_per_column():
    torch = pytest.importorskip("torch")
    from lut_tvm.train import LutLinear, quantize_tables

    torch.manual_seed(0)
    dense = torch.nn.Linear(32, 12)
    with torch.no_grad():
        dense.weight.mul_(torch.logspace(-2, 1, 12)[:, None])  # columns of very different size
    cents = np.random.default_rng(0).standard_normal((4, 16, 8)).astype(np.float32)
    layer = LutLinear.from_linear(dense, cents).eval()
    layer.table_quant = PER_COLUMN
    x = np.random.default_rng(1).standard_normal((40, 32)).astype(np.float32)
    w_dn = layer.weight.detach().numpy().T
    bias = layer.bias.detach().numpy()
    with torch.no_grad():
        got = layer(torch.from_numpy(x)).numpy()
    want = ref.lut_matmul(x, cents, w_dn, bias, "column")
    np.testing.assert_array_equal(got, want)  # the same codes, levels, float32 scale and bias add
    assert np.abs(got - ref.lut_matmul(x, cents, w_dn, bias)).max() > 1e-3
    # the quantized tables themselves, from the float64 tables
    tables = ref.build_tables(cents, w_dn)
    levels, scale = quantize_tables(torch.from_numpy(tables), "column")
    want_levels, want_scale = ref.quantize_tables(tables, "column")
    np.testing.assert_array_equal(levels.numpy(), want_levels)
    np.testing.assert_array_equal(scale.numpy().astype(np.float32), want_scale)
    assert "int8_per_column" in repr(layer)


def test_training_conv_forward_equals_reference_per_column():
    torch = pytest.importorskip("torch")
    from lut_tvm.train import LutConv2d

    torch.manual_seed(1)
    conv = torch.nn.Conv2d(3, 7, 3, stride=2, padding=1)
    with torch.no_grad():
        conv.weight.mul_(torch.logspace(-2, 1, 7)[:, None, None, None])
    cents = np.random.default_rng(1).standard_normal((3, 16, 9)).astype(np.float32)
    layer = LutConv2d.from_conv(conv, cents).eval()
    layer.table_quant = PER_COLUMN
    x = np.random.default_rng(2).standard_normal((2, 3, 9, 7)).astype(np.float32)
    weight, bias = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    with torch.no_grad():
        got = layer(torch.from_numpy(x)).numpy()
    want = ref.lut_conv2d(x, cents, weight, bias, (2, 2), (1, 1, 1, 1), granularity="column")
    np.testing.assert_array_equal(got, want)
    assert np.abs(got - ref.lut_conv2d(x, cents, weight, bias, (2, 2), (1, 1, 1, 1))).max() > 1e-3


# --------------------------------------------------------------------------- whole model


@pytest.mark.filterwarnings("ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore:Renaming name:UserWarning")
def test_compiled_per_column_kmeans_plan_matches_reference(tmp_path):
    """build_kmeans_plan with per-column scales -> version-3 file -> compile (conv shuffle and gather
    dense lookups) equals the NumPy reference forward at per-column granularity."""
    from sklearn.datasets import load_digits

    images = (load_digits().images / 16.0).astype(np.float32)[:, None]
    model = seeded(CNN, 1)
    plan = lut_tvm.build_kmeans_plan(model, images[:256], PlanPolicy(table_quant=PER_COLUMN))
    assert plan.layers and all(l.table_quant is PER_COLUMN for l in plan.layers)
    path = plan.save(tmp_path / "plan.npz")
    x = images[1000:1064]
    y = lut_tvm.compile(model, str(path), example_inputs=(x,))(x)
    tapped = compile_with_codes(model, str(path), example_inputs=(x,))
    expected, r = assert_matches_reference(y, tapped, cnn_reference, model, Plan.load(path), x)
    assert r.used == [l.name for l in plan.layers]
    # ...and the granularity took effect: the per-layer reference is elsewhere
    for layer in plan.layers:
        layer.table_quant = TableQuant.INT8_PER_LAYER
    per_layer, _ = cnn_reference(model, plan, x)
    assert np.abs(per_layer - expected).max() > 1e-4
