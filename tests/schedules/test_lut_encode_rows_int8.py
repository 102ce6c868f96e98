"""The int8 row encode (codes [C, M]) under its rule against ``lut_tvm.int8_encode_reference``, bit
for bit: every dot layout (VNNI, AVX-512BW and AVX2 ``vpmaddubsw``, plain loops), M = 1, 7, 130,
V = 2 / 4 / 8 / 16 with D not a multiple of 16, ties and inputs clipped at the grid's ends. An ISA
runs only where this CPU has it; the assembly checks name the instruction each layout must use."""

import numpy as np
import pytest
import tvm

from lut_tvm import _tvm_compat
from lut_tvm import int8_encode_reference as r8
from lut_tvm.target_features import host_features
from schedules.attrs import LutKind
from schedules.intrin.int8_dot import FALLBACK, INT8_DOT4_AVX2, INT8_DOT4_AVX512BW, INT8_DOT_VNNI, encode_dot_for_target
from schedules.lut_encode_rows_int8_compute import encode_dense_rows_int8_func
from schedules.rules import default_rules
from schedules.rules.lut_encode_rows_int8 import LutEncodeRowsInt8Rule

# (mcpu, the x86 features the CPU needs, intrinsic, instruction in the assembly)
TARGETS = {
    "vnni": ("cascadelake", ("avx512bw", "avx512vnni"), INT8_DOT_VNNI, "vpdpbusd"),
    "avx512bw": ("skylake-avx512", ("avx512bw",), INT8_DOT4_AVX512BW, "vpmaddubsw"),
    "avx2": ("haswell", ("avx2",), INT8_DOT4_AVX2, "vpmaddubsw"),
}
PLAIN = {"kind": "llvm", "num-cores": 2}


def _target(name: str, run: bool = True):
    if name == "plain":
        return tvm.target.Target(PLAIN)
    mcpu, needs, _, _ = TARGETS[name]
    missing = [f for f in needs if not host_features().has(f)]
    if run and missing:
        pytest.skip(f"this CPU lacks {', '.join(missing)}")
    return tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2})


def _build(shape, target):
    sch = LutEncodeRowsInt8Rule().apply(encode_dense_rows_int8_func(*shape), target, False)
    assert sch is not None, "the rule must accept its own kernel"
    assert sch.mod["main"].attrs["lut_tvm.kind"] == LutKind.ENCODE_DENSE_ROWS_INT8
    return tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), target)


def _run(ex, data, centroids):
    pu, norms, inv = r8.quantize_centroids(centroids)
    codes = tvm.runtime.tensor(np.full((centroids.shape[0], data.shape[0]), 251, np.uint8))
    ex(*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in (data, pu, norms, inv)], codes)
    return codes.numpy()


def _case(rows, num_codebooks, num_centroids, sub_len, seed):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((rows, num_codebooks * sub_len)).astype(np.float32)
    centroids = rng.standard_normal((num_codebooks, num_centroids, sub_len)).astype(np.float32)
    centroids[:, 3] = centroids[:, 1]  # a tie: the first index must win
    data[0] = centroids[:, 3].reshape(-1)
    data[-1, ::3] = 1e6  # clipped at +127 / -128
    data[-1, 1::3] = -1e6
    return data, centroids


# (M, C, K, V): D = 10, 28, 56, 48 / 80 (V = 16: any D is a multiple of 16); M = 1 and 7 are one
# partial tile, 130 moves the last tile back; K = 5 runs one argmin chain, K = 32 two passes.
SHAPES = [(1, 5, 16, 2), (7, 7, 16, 4), (130, 7, 16, 8), (130, 3, 16, 16), (7, 5, 16, 16),
          (130, 5, 16, 2), (37, 3, 5, 4), (33, 6, 32, 3)]


@pytest.mark.parametrize("name", ["vnni", "avx512bw", "avx2", "plain"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{c}x{k}x{v}" for m, c, k, v in SHAPES])
def test_codes_equal_the_reference(shape, name):
    target = _target(name)
    data, centroids = _case(*shape, seed=sum(shape))
    codes = _run(_build(shape, target), data, centroids)
    np.testing.assert_array_equal(codes, r8.encode_int8(data, centroids).T)
    assert shape[0] == 1 or (codes[:, 0] == 1).all()  # row 0 (unless also the clipped last) is centroid 1 = 3


@pytest.mark.parametrize("name", ["vnni", "avx512bw", "avx2"])
def test_dot_instruction_and_no_workspace_per_tile(name):
    """Each x86 layout compiles to its dot instruction and keeps every tile's scratch on the stack
    (a named binding in an intrinsic once became a TVMBackendAllocWorkspace call per tile)."""
    target = _target(name, run=False)
    assert encode_dot_for_target(target).intrin == TARGETS[name][2]
    # M = 128: no shifted last tile, whose whole-call index buffer is a (single) workspace
    asm = _tvm_compat.executable_assembly(_build((128, 7, 16, 8), target))
    assert TARGETS[name][3] in asm
    assert "AllocWorkspace" not in asm


def test_default_rules_pick_the_int8_rule_and_plain_targets_fall_back():
    func = encode_dense_rows_int8_func(16, 2, 16, 4)
    target = tvm.target.Target(PLAIN)
    assert encode_dot_for_target(target) == FALLBACK
    applied = [rule for rule in default_rules() if rule.apply(func, target, False) is not None]
    assert applied and isinstance(applied[0], LutEncodeRowsInt8Rule)
