"""K = 32 / 64 LUT kernels: the ``vpermb`` (AVX-512 VBMI) shuffle lookup, the row and conv encodes
feeding it, and a compiled model with a K = 32 / 64 plan, against the NumPy reference; the lookup
intrinsic chosen per target and K.

Kernels run only where the host CPU has VBMI (probed with ``target_features.host_features``); the
IR and assembly checks compile for a VBMI target (znver4) on any machine.
"""

import functools
import json

import numpy as np
import pytest
import torch
import tvm
from torch import nn

import lut_tvm
from lut_tvm import reference as ref
from lut_tvm.policy import PlanPolicy
from lut_tvm.target_features import host_features, host_target, target_features
from lut_tvm.targets import host_cpu_flags
from lut_tvm.testing import GivenCodes, assert_no_near_ties, compile_with_codes
from schedules.attrs import LutKind
from schedules.intrin.lut_shuffle import LUT16_SHUFFLE_AVX2, LUT16_SHUFFLE_AVX512
from schedules.intrin.lut_vbmi import (
    LLVM_PERMUTE,
    LUT32_VBMI,
    LUT64_VBMI,
    lookup_intrin_for_target,
    shuffle_centroids,
)
from schedules.lut_compute import Conv2dGeometry
from schedules.lut_conv_shuffle_compute import encode_conv2d_rows_func, lookup_conv2d_shuffle_func
from schedules.lut_encode_rows_compute import encode_dense_rows_func
from schedules.lut_shuffle_compute import codebook_chunks, lookup_dense_shuffle_func
from schedules.rules.lut_encode_rows import LutEncodeRowsRule
from schedules.rules.lut_lookup_shuffle import LutLookupShuffleRule

VBMI = {"kind": "llvm", "mcpu": "znver4", "num-cores": 2}
AVX512_NO_VBMI = {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}
AVX2 = {"kind": "llvm", "mcpu": "haswell"}
NEEDS_VBMI = pytest.mark.skipif(
    not host_features().byte_permute_128,
    reason="host CPU has no AVX-512 VBMI (vpermb): the K = 32 / 64 kernels cannot run here")
NEEDS_AVX2 = pytest.mark.skipif(not host_features().has("avx2"), reason="host CPU has no AVX2")
CENTROIDS = [32, 64]


def _compile(func, rule, target):
    sch = rule.apply(func, tvm.target.Target(target), False)
    assert sch is not None
    return tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), tvm.target.Target(target))


def _call(executable, *arrays):
    tensors = [tvm.runtime.tensor(np.ascontiguousarray(a), tvm.cpu()) for a in arrays]
    executable["main"](*tensors)
    return tensors[-1].numpy()


@functools.lru_cache(maxsize=None)
def _built_lookup(rows, num_codebooks, out_features, num_centroids, relu, target_json):
    func = lookup_dense_shuffle_func(rows, num_codebooks, out_features, relu,
                                     num_centroids=num_centroids)
    return _compile(func, LutLookupShuffleRule(), json.loads(target_json))


def run_lookup(codes_mc, tables_ckn, scale, bias, relu=False, target=VBMI):
    """The shuffle lookup on reference-layout inputs (codes [M, C], tables [C, K, N])."""
    rows, num_codebooks = codes_mc.shape
    _, num_centroids, out_features = tables_ckn.shape
    ex = _built_lookup(rows, num_codebooks, out_features, num_centroids, relu,
                       json.dumps(target, sort_keys=True))
    return _call(ex, codes_mc.T, tables_ckn.transpose(2, 0, 1), scale.astype(np.float32),
                 bias.astype(np.float32), np.zeros((rows, out_features), np.float32))


def random_inputs(rows, num_codebooks, out_features, num_centroids, seed=0):
    """Codes over all of [0, K) (the last centroid included) and tables over all of int8."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, num_centroids, (rows, num_codebooks)).astype(np.uint8)
    codes.flat[0], codes.flat[-1] = num_centroids - 1, num_centroids // 2 - 1
    tables = rng.integers(-128, 128, (num_codebooks, num_centroids, out_features)).astype(np.int8)
    return codes, tables


# Odd shapes: rows not a multiple of 64 (or of 16), one row, a prime N, C over 256 (two chunks).
SHAPES = [(37, 7, 13), (100, 7, 13), (64, 24, 16), (128, 24, 40), (1, 3, 5), (100, 300, 13)]


@NEEDS_VBMI
@pytest.mark.parametrize("num_centroids", CENTROIDS)
@pytest.mark.parametrize("rows, num_codebooks, out_features", SHAPES)
def test_accumulator_exact(num_centroids, rows, num_codebooks, out_features):
    """scale = 1, bias = 0: the float output is the reference's int32 accumulator, exactly."""
    codes, tables = random_inputs(rows, num_codebooks, out_features, num_centroids)
    out = run_lookup(codes, tables, np.ones(out_features), np.zeros(out_features))
    np.testing.assert_array_equal(out, ref.lookup_accumulate(codes, tables).astype(np.float32))


@NEEDS_VBMI
@pytest.mark.parametrize("num_centroids", CENTROIDS)
@pytest.mark.parametrize("value", [127, -128])
def test_no_int16_overflow_at_300_codebooks(num_centroids, value):
    """C = 300 entries of 127 / -128 sum past int16: the chunked word sums stay exact."""
    rows, num_codebooks, out_features = 100, 300, 16
    assert len(codebook_chunks(num_codebooks)) == 2
    codes, _ = random_inputs(rows, num_codebooks, out_features, num_centroids, seed=1)
    tables = np.full((num_codebooks, num_centroids, out_features), value, np.int8)
    out = run_lookup(codes, tables, np.ones(out_features), np.zeros(out_features))
    np.testing.assert_array_equal(out, np.full((rows, out_features), value * 300, np.float32))


@NEEDS_VBMI
@pytest.mark.parametrize("num_centroids", CENTROIDS)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("rows, num_codebooks, out_features", [(37, 7, 13), (128, 24, 48)])
def test_scale_bias_relu(num_centroids, relu, rows, num_codebooks, out_features):
    codes, tables = random_inputs(rows, num_codebooks, out_features, num_centroids, seed=2)
    rng = np.random.default_rng(3)
    scale = rng.uniform(0.001, 0.02, out_features).astype(np.float32)
    bias = rng.standard_normal(out_features).astype(np.float32)
    out = run_lookup(codes, tables, scale, bias, relu)
    expected = ref.lookup_accumulate(codes, tables).astype(np.float32) * scale + bias
    if relu:
        expected = np.maximum(expected, 0.0)
        assert (out == 0).any() and (out > 0).any()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@NEEDS_VBMI
@pytest.mark.parametrize("num_centroids", CENTROIDS)
def test_row_encode_then_lookup_exact(num_centroids):
    """The row encode with K centroids writes the reference's codes; the lookup of them equals
    the reference's accumulator (M = 100, D = 7 x 4)."""
    rows, num_codebooks, sub_len, out_features = 100, 7, 4, 32
    rng = np.random.default_rng(4)
    x = rng.standard_normal((rows, num_codebooks * sub_len)).astype(np.float32)
    centroids = rng.standard_normal((num_codebooks, num_centroids, sub_len)).astype(np.float32)
    assert_no_near_ties(x, centroids)
    norms = (centroids.astype(np.float64) ** 2).sum(-1).astype(np.float32)
    encode = _compile(encode_dense_rows_func(rows, num_codebooks, num_centroids, sub_len),
                      LutEncodeRowsRule(), VBMI)
    codes = _call(encode, x, centroids, norms, np.zeros((num_codebooks, rows), np.uint8)).T
    want = ref.encode(x, centroids)
    np.testing.assert_array_equal(codes, want)
    assert len(np.unique(codes)) > 16  # codes past 16 are exercised
    _, tables = random_inputs(rows, num_codebooks, out_features, num_centroids, seed=5)
    out = run_lookup(codes, tables, np.ones(out_features), np.zeros(out_features))
    np.testing.assert_array_equal(out, ref.lookup_accumulate(want, tables).astype(np.float32))


@NEEDS_VBMI
@pytest.mark.parametrize("num_centroids", CENTROIDS)
def test_conv_encode_and_lookup_exact(num_centroids):
    """The conv shuffle path with K centroids (3x3, stride 2, asymmetric padding, batch 3, NCHW
    output) against im2col + the reference's encode and accumulator."""
    data_shape, out_channels = (3, 3, 11, 9), 48
    geometry = Conv2dGeometry((3, 3), (2, 2), (1, 0, 2, 1), (1, 1))
    rng = np.random.default_rng(6)
    x = rng.standard_normal(data_shape).astype(np.float32)
    num_codebooks, sub_len = 3, 9
    centroids = rng.standard_normal((num_codebooks, num_centroids, sub_len)).astype(np.float32)
    tables = rng.integers(-128, 128, (num_codebooks, num_centroids, out_channels)).astype(np.int8)
    rows, (batch, out_h, out_w) = ref.im2col_nchw(x, (3, 3), (2, 2), (1, 0, 2, 1))
    assert_no_near_ties(rows, centroids)
    norms = (centroids.astype(np.float64) ** 2).sum(-1).astype(np.float32)
    encode = _compile(encode_conv2d_rows_func(data_shape, geometry, num_codebooks, num_centroids,
                                              sub_len), LutEncodeRowsRule(), VBMI)
    codes = _call(encode, x, centroids, norms, np.zeros((num_codebooks, len(rows)), np.uint8))
    want = ref.encode(rows, centroids)
    np.testing.assert_array_equal(codes.T, want)
    out_shape = (batch, out_channels, out_h, out_w)
    lookup = _compile(lookup_conv2d_shuffle_func(out_shape, num_codebooks,
                                                 num_centroids=num_centroids),
                      LutLookupShuffleRule(), VBMI)
    out = _call(lookup, codes, tables.transpose(2, 0, 1), np.ones(out_channels, np.float32),
                np.zeros(out_channels, np.float32), np.zeros(out_shape, np.float32))
    acc = ref.lookup_accumulate(want, tables).reshape(batch, out_h, out_w, -1).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(out, acc.astype(np.float32))


@pytest.mark.parametrize("num_centroids, intrin", [(32, LUT32_VBMI), (64, LUT64_VBMI)])
def test_ir_and_asm_use_vpermb(num_centroids, intrin):
    """Compile only (any host): the scheduled TIR calls ``vpermb``'s LLVM intrinsic once per
    64-row block and the assembly has a zmm ``vpermb`` (a ``vpshufb`` remains: the constant
    in-lane permutation of the codes into row pairs)."""
    assert lookup_intrin_for_target(tvm.target.Target(VBMI), num_centroids) == intrin
    func = lookup_dense_shuffle_func(128, 24, 48, True, num_centroids=num_centroids)
    sch = LutLookupShuffleRule().apply(func, tvm.target.Target(VBMI), False)
    assert LLVM_PERMUTE in sch.mod.script()
    ex = tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), tvm.target.Target(VBMI))
    ops = [line.split() for line in ex.mod.inspect_source("asm").splitlines() if line.strip()]
    assert any(op[0] == "vpermb" and "zmm" in " ".join(op) for op in ops)


def test_intrinsic_choice_per_target_and_k():
    """K = 32 / 64 get ``vpermb`` only on VBMI targets; K = 16 keeps its shuffle everywhere."""
    vbmi, skylake, haswell = (tvm.target.Target(t) for t in (VBMI, AVX512_NO_VBMI, AVX2))
    assert lookup_intrin_for_target(vbmi, 16) == LUT16_SHUFFLE_AVX512
    assert lookup_intrin_for_target(skylake, 16) == LUT16_SHUFFLE_AVX512
    assert lookup_intrin_for_target(haswell, 16) == LUT16_SHUFFLE_AVX2
    for num_centroids in CENTROIDS:
        assert lookup_intrin_for_target(skylake, num_centroids) is None
        assert lookup_intrin_for_target(haswell, num_centroids) is None
    assert lookup_intrin_for_target(vbmi, 128) is None
    assert shuffle_centroids(vbmi) == (16, 32, 64)
    assert shuffle_centroids(skylake) == shuffle_centroids(haswell) == (16,)
    assert shuffle_centroids(tvm.target.Target({"kind": "llvm"})) == ()


def test_k32_without_vbmi_falls_back_to_scalar_and_stays_exact():
    """A K = 32 shuffle lookup scheduled for a plain target (no intrinsic) is still exact."""
    target = {"kind": "llvm"}
    assert lookup_intrin_for_target(tvm.target.Target(target), 32) is None
    codes, tables = random_inputs(37, 7, 13, 32)
    out = run_lookup(codes, tables, np.ones(13), np.zeros(13), target=target)
    np.testing.assert_array_equal(out, ref.lookup_accumulate(codes, tables).astype(np.float32))


# --------------------------------------------------------------------------- a compiled model


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 48)
        self.fc2 = nn.Linear(48, 32)
        self.fc3 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


@functools.lru_cache(maxsize=None)
def _mlp_and_data():
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

    torch.manual_seed(0)
    digits = (load_digits().images / 16.0).astype(np.float32).reshape(-1, 64)
    return _MLP().eval(), digits


def _mlp_reference(model, plan, x, codes):
    """fc1 and fc2 by the reference with the compiled model's codes, fc3 dense."""
    weights = {k: v.detach().numpy().astype(np.float64) for k, v in model.state_dict().items()}
    layers = {layer.name: layer for layer in plan.layers}
    given = GivenCodes(codes)
    h = x
    for name in ("fc1", "fc2"):
        layer = layers[name]
        h = np.maximum(given.lut_matmul(h, layer.centroids, weights[f"{name}.weight"].T,
                                        weights[f"{name}.bias"], where=name), 0)
    given.assert_all_used()
    return h @ weights["fc3.weight"].T + weights["fc3.bias"]


@pytest.mark.parametrize("num_centroids", CENTROIDS)
@pytest.mark.parametrize("rows, target, encode_kind", [
    pytest.param(128, VBMI, LutKind.ENCODE_DENSE_ROWS, marks=NEEDS_VBMI, id="vbmi-shuffle"),
    # No VBMI: the same plan takes the generic (gather) kernels.
    pytest.param(128, AVX2, LutKind.ENCODE_DENSE, marks=NEEDS_AVX2, id="avx2-gather"),
    # Fewer rows than one vpermb register still take it (padded rows); fewer than
    # MIN_SHUFFLE_ROWS take the gather kernels, on a VBMI target too.
    pytest.param(40, VBMI, LutKind.ENCODE_DENSE_ROWS, marks=NEEDS_VBMI, id="vbmi-40-rows"),
    pytest.param(3, VBMI, LutKind.ENCODE_DENSE, marks=NEEDS_VBMI, id="vbmi-3-rows"),
])
def test_compiled_model_with_k_centroids_matches_reference(num_centroids, rows, target, encode_kind):
    model, digits = _mlp_and_data()
    policy = PlanPolicy(num_centroids=num_centroids, skip_last_dense=True)
    plan = lut_tvm.build_kmeans_plan(model, digits[:512], policy)
    assert [layer.num_centroids for layer in plan.layers] == [num_centroids] * 2
    x = digits[1000:1000 + rows]
    compiled = lut_tvm.compile(model, plan, target=target, example_inputs=(x,))
    y = compiled(x)
    tapped = compile_with_codes(model, plan, target=target, example_inputs=(x,))
    assert tapped.kinds == [encode_kind] * 2
    tapped_y, codes = tapped(x)
    np.testing.assert_array_equal(tapped_y, y)
    assert max(int(c.max()) for c in codes) >= 16  # the codes past K = 16 are used
    expected = _mlp_reference(model, plan, x, codes)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_host_probe_agrees_with_cpuinfo():
    """The skip probe: the host target's LLVM features, kept only where /proc/cpuinfo has them."""
    features = host_features()
    assert features.features <= target_features(host_target()).features
    if features.arch == "x86":
        assert features.byte_permute_128 == ("avx512vbmi" in host_cpu_flags()
                                             and target_features(host_target()).byte_permute_128)
