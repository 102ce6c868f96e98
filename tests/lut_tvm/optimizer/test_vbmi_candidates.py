"""optimize offers K = 32 / 64 per layer only on targets whose lookup runs AVX-512 VBMI ``vpermb``
(K = 16 elsewhere); a (V, K) option behaves as its V where code reads a V, and keeps its K through
the centroid bank, the plan and a whole optimize run."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
from optimizer_settings import FAST

import lut_tvm
from lut_tvm.frontends import import_model
from lut_tvm.optimizer.layers import (
    CentroidBank,
    LutOption,
    model_layers,
    num_centroids_of,
    offered_centroids,
)
from lut_tvm.target_features import host_features
from lut_tvm.targets import resolve_target

VBMI = {"kind": "llvm", "mcpu": "znver4"}
HASWELL = {"kind": "llvm", "mcpu": "haswell"}
SKYLAKE = {"kind": "llvm", "mcpu": "skylake-avx512"}


@pytest.mark.parametrize("spec, offered", [
    (VBMI, (16, 32, 64)),
    (HASWELL, (16,)),
    (SKYLAKE, (16,)),  # AVX-512BW without VBMI
    ("arm64", (16,)),
    ({"kind": "llvm"}, (16,)),  # no shuffle at all: the gather kernels, K = 16 as before
])
def test_offered_centroids_per_target(spec, offered):
    assert offered_centroids(resolve_target(spec)) == offered


def test_lut_option_is_its_v_and_keeps_its_k():
    k16, k32 = LutOption(4, 16), LutOption(4, 32)
    assert k16 == 4 and hash(k16) == hash(4) and {4: "x"}[k16] == "x"
    assert k32 != 4 and k32 != k16 and len({k16, k32, 4}) == 2
    assert k32 == LutOption(4, 32) and hash(k32) == hash(LutOption(4, 32))
    assert int(k32) == k32.sub_len == 4 and 12 % k32 == 0  # a V wherever a V is read
    assert sorted([LutOption(4, 64), 16, k32, 4, LutOption(2, 32)]) == [LutOption(2, 32), 4, k32, LutOption(4, 64), 16]
    assert f"V={k16}" == "V=4" and f"V={k32}" == "V=4 K=32"
    assert num_centroids_of(k32) == 32 and num_centroids_of(4) == 16
    for again in (pickle.loads(pickle.dumps(k32)), copy.deepcopy(k32)):
        assert again == k32 and again.num_centroids == 32
    assert json.loads(json.dumps({"fc1": k32})) == {"fc1": 4}


@pytest.fixture(scope="module")
def imported_mlp(mlp_case):
    model, calibration, x, _ = mlp_case
    return import_model(model, (x[:64],)), calibration


@pytest.mark.parametrize("spec", [HASWELL, SKYLAKE])
def test_no_vbmi_offers_k16_only(imported_mlp, spec):
    imported, _ = imported_mlp
    layers = model_layers(imported, (4, 16), centroids=offered_centroids(resolve_target(spec)))
    assert layers
    options = [option for layer in layers for option in layer.sub_lens]
    assert {num_centroids_of(o) for o in options} == {16}
    assert all(o == int(o) for o in options)  # a K = 16 option is its plain V


def test_vbmi_offers_every_k_and_the_bank_fits_k_centroids(imported_mlp, tmp_path):
    imported, calibration = imported_mlp
    layers = model_layers(imported, (4, 16), centroids=offered_centroids(resolve_target(VBMI)))
    layer = layers[0]
    assert list(layer.sub_lens) == [LutOption(v, k) for v in (4, 16) for k in (16, 32, 64)]
    bank = CentroidBank(imported, layers, calibration, tmp_path, max_rows=512)
    depth = layer.depth
    for num_centroids in (16, 32, 64):
        centroids = bank.centroids(layer, LutOption(4, num_centroids))
        assert centroids.shape == (depth // 4, num_centroids, 4)
        # k-means with K centroids: K distinct centroids per codebook (the rows are not degenerate)
        assert min(len(np.unique(c, axis=0)) for c in centroids) == num_centroids
    plan = bank.plan({layer.name: LutOption(4, 32)})
    assert [(l.sub_vector_len, l.num_centroids) for l in plan.layers] == [(4, 32)]
    assert bank.plan({layer.name: 4}).layers[0].num_centroids == 16
    # cached per K: a second bank reads the same centroids from disk
    again = CentroidBank(imported, layers, calibration, tmp_path, max_rows=512)
    np.testing.assert_array_equal(again.centroids(layer, LutOption(4, 32)), bank.centroids(layer, LutOption(4, 32)))


def _optimize(case, target, cache):
    model, calibration, x, y = case
    return lut_tvm.optimize(model, calibration, x, y, budget=1.5, target=target, cache_dir=cache,
                            **{**FAST, "sub_lens": (16,)})


@pytest.mark.skipif(not host_features().has("avx2"), reason="host CPU has no AVX2")
def test_optimize_on_haswell_offers_k16_only(mlp_case, tmp_path):
    result = _optimize(mlp_case, HASWELL, tmp_path)
    assert {c["num_centroids"] for c in result.report["candidates"] if c["sub_len"] != "int8"} == {16}
    assert all(layer.num_centroids == 16 for layer in result.plan.layers if not layer.is_int8)


@pytest.mark.skipif(not host_features().byte_permute_128,
                    reason="host CPU has no AVX-512 VBMI: K = 32 / 64 kernels cannot be timed here")
def test_optimize_on_vbmi_tries_every_k_and_plans_the_chosen_k(mlp_case, tmp_path):
    result = _optimize(mlp_case, VBMI, tmp_path)
    candidates = [c for c in result.report["candidates"] if c["sub_len"] != "int8"]
    assert {c["num_centroids"] for c in candidates} == {16, 32, 64}
    # every option was timed on its own kernel
    for layer in {c["layer"] for c in candidates}:
        assert len({result.cost_model.lut_ms[(layer, LutOption(16, k))] for k in (16, 32, 64)}) == 3
    assert result.choice
    for layer in (l for l in result.plan.layers if not l.is_int8):
        option = result.choice[layer.name]
        assert (layer.sub_vector_len, layer.num_centroids) == (int(option), num_centroids_of(option))
