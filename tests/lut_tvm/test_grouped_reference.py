"""The NumPy reference of grouped / depthwise LUT convs (against torch's grouped conv and a direct
loop) and the plan's ``groups`` field (validation, version 4, older versions refuse it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lut_tvm import reference as ref
from lut_tvm.errors import PlanError
from lut_tvm.npz_meta import META_KEY
from lut_tvm.plan import PLAN_VERSION_GROUPS, PLAN_VERSION_TABLE_QUANT, LayerPlan, Plan
from lut_tvm.weights import LayerKind, fingerprint, grouped_dense_matrix

# (in channels, out channels, groups, kernel, V): grouped G = 2 and 4, depthwise (G = C_in), depthwise
# with a channel multiplier, and V smaller than one group's window.
SHAPES = [(4, 6, 2, 3, 9), (8, 8, 4, 3, 6), (5, 5, 5, 3, 9), (3, 6, 3, 3, 3), (6, 4, 2, 1, 3)]


def _weight(rng, c_in, c_out, groups, k):
    return rng.standard_normal((c_out, c_in // groups, k, k)).astype(np.float32)


@pytest.mark.parametrize("c_in,c_out,groups,k,v", SHAPES)
def test_float_tables_at_exact_rows_equal_torch_grouped_conv(c_in, c_out, groups, k, v):
    """When every window sub-vector is a centroid, the float-table grouped LUT is the conv itself."""
    rng = np.random.default_rng(c_in * 10 + groups)
    weight = _weight(rng, c_in, c_out, groups, k)
    x = rng.standard_normal((2, c_in, 5, 6)).astype(np.float32)
    rows, (batch, out_h, out_w) = ref.im2col_nchw(x, (k, k), 1, 0)
    num_codebooks = rows.shape[1] // v
    # centroids: each codebook's first sub-vectors (distinct), so encode finds every row exactly
    subs = rows.reshape(len(rows), num_codebooks, v)
    centroids = np.ascontiguousarray(subs[:16].transpose(1, 0, 2)).astype(np.float32)
    codes = np.tile(np.arange(16, dtype=np.uint8), (len(rows) + 15) // 16)[: len(rows)]
    codes = np.repeat(codes[:, None], num_codebooks, axis=1)
    exact_rows = centroids[np.arange(num_codebooks)[None], codes].reshape(len(rows), -1)
    tables = ref.build_grouped_tables(centroids, weight, groups)
    assert tables.shape == (num_codebooks, 16, c_out // groups)
    out = ref.grouped_lookup_accumulate(codes, tables, groups)
    # the same windows through torch's grouped conv: rebuild an input whose im2col are exact_rows
    expected = exact_rows.astype(np.float64) @ grouped_dense_matrix(weight, groups).astype(np.float64)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
    # and the block-diagonal matrix is torch's grouped conv on real inputs
    torch_out = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(weight).double(), groups=groups)
    flat = rows.astype(np.float64) @ grouped_dense_matrix(weight, groups).astype(np.float64)
    np.testing.assert_allclose(flat.reshape(batch, out_h, out_w, c_out).transpose(0, 3, 1, 2),
                               torch_out.numpy(), rtol=1e-9, atol=1e-9)


def _loop_grouped_lut(x, centroids, weight, groups, bias, padding, granularity):
    """A direct loop: per group, slice channels, im2col, encode, tables P.W, shared INT8 scale."""
    c_out = weight.shape[0]
    per_out, per_in = c_out // groups, x.shape[1] // groups
    per_books = centroids.shape[0] // groups
    real = np.zeros((centroids.shape[0], centroids.shape[1], per_out))
    all_codes = []
    for g in range(groups):
        rows, shape = ref.im2col_nchw(x[:, g * per_in:(g + 1) * per_in], weight.shape[2:], 1, padding)
        cents = centroids[g * per_books:(g + 1) * per_books]
        all_codes.append(ref.encode(rows, cents))
        w_g = weight[g * per_out:(g + 1) * per_out].reshape(per_out, -1).T
        for c in range(per_books):
            for k in range(cents.shape[1]):
                for o in range(per_out):
                    real[g * per_books + c, k, o] = float(np.dot(cents[c, k].astype(np.float64),
                                                                 w_g[c * cents.shape[2]:(c + 1) * cents.shape[2], o]))
    if granularity == "layer":
        scale = np.full(c_out, np.abs(real).max() / 127)
    else:
        scale = np.array([np.abs(real[(o // per_out) * per_books:(o // per_out + 1) * per_books, :, o % per_out]).max()
                          / 127 for o in range(c_out)])
    batch, out_h, out_w = shape
    out = np.zeros((batch * out_h * out_w, c_out), np.float32)
    for o in range(c_out):
        g = o // per_out
        acc = np.zeros(len(out), np.int64)
        for c in range(per_books):
            levels = np.clip(np.rint(real[g * per_books + c, :, o % per_out] / scale[o]), -127, 127)
            acc += levels[all_codes[g][:, c]].astype(np.int64)
        out[:, o] = acc.astype(np.float32) * np.float32(scale[o]) + bias[o]
    return out.reshape(batch, out_h, out_w, c_out).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("granularity", ["layer", "column"])
@pytest.mark.parametrize("c_in,c_out,groups,k,v", SHAPES)
def test_lut_grouped_conv2d_equals_a_direct_loop(c_in, c_out, groups, k, v, granularity):
    rng = np.random.default_rng(7 + groups)
    weight = _weight(rng, c_in, c_out, groups, k)
    bias = rng.standard_normal(c_out).astype(np.float32)
    x = rng.standard_normal((2, c_in, 5, 5)).astype(np.float32)
    num_codebooks = c_in * k * k // v
    centroids = rng.standard_normal((num_codebooks, 16, v)).astype(np.float32)
    got = ref.lut_grouped_conv2d(x, centroids, weight, groups, bias, padding=k // 2, granularity=granularity)
    expected = _loop_grouped_lut(x, centroids, weight, groups, bias, k // 2, granularity)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _grouped_layer(groups=4, tables=None):
    weight = np.random.default_rng(0).standard_normal((8, 8 // groups, 3, 3)).astype(np.float32)
    centroids = np.zeros((8 * 9 // 9, 16, 9), np.float32)
    return LayerPlan("dw", LayerKind.CONV2D, weight.shape, fingerprint(weight), centroids,
                     tables=tables, groups=groups)


def test_plan_with_groups_round_trips_as_version_4(tmp_path):
    layer = _grouped_layer(tables=np.ones((8, 16, 2), np.float32))
    plan = Plan([layer])
    assert plan.version == PLAN_VERSION_GROUPS
    loaded = Plan.load(plan.save(tmp_path / "plan.npz"))
    assert loaded.layers[0].groups == 4
    np.testing.assert_array_equal(loaded.layers[0].tables, layer.tables)
    with np.load(tmp_path / "plan.npz") as npz:
        assert json.loads(npz[META_KEY].tobytes())["version"] == PLAN_VERSION_GROUPS


def test_plan_without_groups_keeps_its_older_version(tmp_path):
    layer = _grouped_layer(groups=1)
    layer.centroids = np.zeros((8, 16, 9), np.float32)
    layer.weight_shape = (8, 8, 3, 3)
    assert Plan([layer]).version < PLAN_VERSION_GROUPS
    assert Plan.load(Plan([layer]).save(tmp_path / "p.npz")).layers[0].groups == 1


def test_groups_in_an_older_version_file_is_refused(tmp_path):
    path = Plan([_grouped_layer()]).save(tmp_path / "plan.npz")
    with np.load(path) as npz:
        arrays = dict(npz)
    meta = json.loads(arrays[META_KEY].tobytes())
    meta["version"] = PLAN_VERSION_TABLE_QUANT
    meta["layers"][0].pop("tables", None)
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(PlanError, match="'groups' 4 needs plan version 4"):
        Plan.load(tmp_path / "old.npz")


@pytest.mark.parametrize("change,message", [
    (dict(groups=3), "does not divide"),
    (dict(groups=0), "not a positive integer"),
    (dict(groups=2), "C\\*V = 8\\*9"),
    (dict(tables=np.ones((8, 16, 8), np.float32)), "field 'tables'"),
])
def test_bad_groups_are_named(change, message):
    layer = _grouped_layer()
    for key, value in change.items():
        setattr(layer, key, value)
    with pytest.raises(PlanError, match=message):
        layer.validate()


@pytest.mark.parametrize("granularity", ["int8_per_layer", "int8_per_column"])
@pytest.mark.parametrize("c_in,c_out,groups,k,v", SHAPES)
def test_torch_grouped_lut_conv_hard_forward_equals_reference(c_in, c_out, groups, k, v, granularity):
    """``LutConv2d`` with groups (block-diagonal tables in torch) is the compact NumPy reference."""
    from torch import nn

    from lut_tvm.plan import TableQuant
    from lut_tvm.train.layers import LutConv2d

    torch.manual_seed(groups)
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups)
    rng = np.random.default_rng(3)
    centroids = rng.standard_normal((c_in * k * k // v, 16, v)).astype(np.float32)
    layer = LutConv2d.from_conv(conv, centroids).eval()
    layer.table_quant = TableQuant(granularity)
    x = rng.standard_normal((2, c_in, 6, 6)).astype(np.float32)
    with torch.no_grad():
        got = layer(torch.from_numpy(x)).numpy()
    expected = ref.lut_grouped_conv2d(x, centroids, conv.weight.detach().numpy(), groups,
                                      conv.bias.detach().numpy(), padding=k // 2,
                                      granularity=TableQuant(granularity).granularity)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert layer.to_dense().groups == groups
