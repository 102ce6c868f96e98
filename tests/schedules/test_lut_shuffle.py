"""The shuffle lookup (codes [C, M], tables [N, C, 16]) under its rule, against the NumPy reference.

ISA tests run only where the CPU has the ISA (a /proc/cpuinfo probe); ARM is compile-only: the
generated assembly must contain ``tbl``.
"""

import functools
import json

import numpy as np
import pytest
import tvm
from tvm import s_tir

from lut_tvm import reference as ref
from lut_tvm.targets import host_cpu_flags
from schedules.intrin.lut_shuffle import (
    LLVM_SHUFFLE,
    LUT16_SHUFFLE_AVX2,
    LUT16_SHUFFLE_AVX512,
    LUT16_SHUFFLE_NEON,
    shuffle_intrin_for_target,
)
from schedules.lut_shuffle_compute import (
    LOOKUP_DENSE_SHUFFLE,
    codebook_chunks,
    lookup_dense_shuffle_func,
)
from schedules.lut_kernels import lookup_dense_func
from schedules.rules.lut_lookup_shuffle import LutLookupShuffleRule


def cpu_flags() -> frozenset:
    """The host CPU's feature flags."""
    return frozenset(host_cpu_flags())


AVX512 = {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}
AVX2 = {"kind": "llvm", "mcpu": "haswell"}
ARM = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}

RUNNABLE = [
    pytest.param(
        AVX512, LUT16_SHUFFLE_AVX512, id="avx512",
        marks=pytest.mark.skipif(not {"avx512f", "avx512bw"} <= cpu_flags(), reason="no AVX-512BW"),
    ),
    pytest.param(
        AVX2, LUT16_SHUFFLE_AVX2, id="avx2",
        marks=pytest.mark.skipif("avx2" not in cpu_flags(), reason="no AVX2"),
    ),
]


def schedule(rows, num_codebooks, out_features, relu, target, **rule_args):
    func = lookup_dense_shuffle_func(rows, num_codebooks, out_features, relu)
    sch = LutLookupShuffleRule(**rule_args).apply(func, tvm.target.Target(target), False)
    assert sch is not None
    return sch


@functools.lru_cache(maxsize=None)
def build(rows, num_codebooks, out_features, relu, target_json):
    target = json.loads(target_json)
    sch = schedule(rows, num_codebooks, out_features, relu, target)
    return tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), tvm.target.Target(target))


def run(codes_mc, tables_ckn, scale, bias, relu, target):
    """Run the shuffle kernel on reference-layout inputs (codes [M, C], tables [C, K, N])."""
    rows, num_codebooks = codes_mc.shape
    out_features = tables_ckn.shape[2]
    ex = build(rows, num_codebooks, out_features, relu, json.dumps(target, sort_keys=True))
    dev = tvm.cpu()
    args = [
        np.ascontiguousarray(codes_mc.T),
        np.ascontiguousarray(tables_ckn.transpose(2, 0, 1)),
        scale.astype(np.float32),
        bias.astype(np.float32),
        np.zeros((rows, out_features), np.float32),
    ]
    tensors = [tvm.runtime.tensor(a, dev) for a in args]
    ex["main"](*tensors)
    return tensors[-1].numpy()


def random_inputs(rows, num_codebooks, out_features, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 16, (rows, num_codebooks)).astype(np.uint8)
    tables = rng.integers(-127, 128, (num_codebooks, 16, out_features)).astype(np.int8)
    return codes, tables


# (128, 25, 100): 4-channel tiles (a multiple of 4 preferred to 5); (64, 5, 10): 5-channel tiles.
SHAPES = [(37, 7, 13), (100, 7, 13), (64, 24, 16), (128, 24, 40), (1, 3, 5), (100, 300, 13),
          (128, 25, 100), (64, 5, 10)]


@pytest.mark.parametrize("target, intrin", RUNNABLE)
@pytest.mark.parametrize("rows, num_codebooks, out_features", SHAPES)
def test_accumulator_exact(target, intrin, rows, num_codebooks, out_features):
    """scale = 1, bias = 0: the float output is the int32 accumulator, exactly."""
    del intrin
    codes, tables = random_inputs(rows, num_codebooks, out_features)
    out = run(codes, tables, np.ones(out_features), np.zeros(out_features), False, target)
    expected = ref.lookup_accumulate(codes, tables)
    np.testing.assert_array_equal(out, expected.astype(np.float32))


@pytest.mark.parametrize("target, intrin", RUNNABLE)
@pytest.mark.parametrize("value", [127, -127])
def test_no_int16_overflow_at_300_codebooks(target, intrin, value):
    """C = 300 tables of +-127 sum to +-38100, past int16: the chunked accumulators stay exact."""
    del intrin
    rows, num_codebooks, out_features = 37, 300, 13
    assert len(codebook_chunks(num_codebooks)) == 2
    codes, _ = random_inputs(rows, num_codebooks, out_features, seed=1)
    tables = np.full((num_codebooks, 16, out_features), value, np.int8)
    out = run(codes, tables, np.ones(out_features), np.zeros(out_features), False, target)
    np.testing.assert_array_equal(out, np.full((rows, out_features), value * 300, np.float32))


@pytest.mark.parametrize("target, intrin", RUNNABLE)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize(
    "rows, num_codebooks, out_features",
    # (128, 24, 48), (64, 9, 4) and (128, 25, 100): whole 64-row tiles of 8 / 4 / 4 channels,
    # the dense epilogue transposed in registers (the intrinsic's ReLU variant included).
    [(37, 7, 13), (100, 24, 48), (128, 24, 48), (64, 9, 4), (128, 25, 100)],
)
def test_scale_bias_relu(target, intrin, relu, rows, num_codebooks, out_features):
    del intrin
    codes, tables = random_inputs(rows, num_codebooks, out_features, seed=2)
    rng = np.random.default_rng(3)
    scale = rng.uniform(0.001, 0.02, out_features).astype(np.float32)
    bias = rng.standard_normal(out_features).astype(np.float32)
    out = run(codes, tables, scale, bias, relu, target)
    expected = ref.lookup_accumulate(codes, tables).astype(np.float32) * scale + bias
    if relu:
        expected = np.maximum(expected, 0.0)
        assert (out == 0).any() and (out > 0).any()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target, intrin", [(AVX512, LUT16_SHUFFLE_AVX512), (AVX2, LUT16_SHUFFLE_AVX2)])
def test_x86_ir_and_asm_use_the_shuffle(target, intrin):
    """The scheduled TIR calls the llvm shuffle intrinsic and the assembly has vpshufb (compile only)."""
    sch = schedule(100, 7, 16, False, target)
    assert LLVM_SHUFFLE[intrin] in sch.mod.script()
    ex = tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), tvm.target.Target(target))
    asm = ex.mod.inspect_source("asm")
    assert "vpshufb" in asm
    register = "zmm" if intrin == LUT16_SHUFFLE_AVX512 else "ymm"
    assert any("vpshufb" in line and register in line for line in asm.splitlines())


def test_avx512_asm_has_word_sums_and_no_scatter():
    """The lookup adds words and shifted words (no ``vpmovsxbw`` sign extension on the shuffle's
    port) and the dense epilogue is transposed in registers (no ``vscatter``) on whole tiles."""
    sch = schedule(128, 24, 48, True, AVX512)
    ex = tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), tvm.target.Target(AVX512))
    ops = [line.split()[0] for line in ex.mod.inspect_source("asm").splitlines() if line.strip()]
    assert "vpshufb" in ops and "vpsrlw" in ops
    assert "vpmovsxbw" not in ops
    assert not any(op.startswith("vscatter") for op in ops)


def _workspace_calls(sch, target) -> int:
    """How many TVMBackendAllocWorkspace calls the built kernel makes per tile (LLVM IR)."""
    ex = tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), tvm.target.Target(target))
    return ex.mod.inspect_source("ll").count("load ptr, ptr @__TVMBackendAllocWorkspace")


@pytest.mark.parametrize("rule_args, expected", [({}, 1), ({"n_tile": 4, "row_blocks": 1}, 0)])
def test_only_large_word_sums_take_a_workspace(rule_args, expected):
    """The intrinsics bind no vector to a variable (TVMScript would make it a "local" buffer,
    served by a workspace call per tile): the default tile's 2 KiB of word sums is the only
    workspace, and a 512-byte tile (4 channels x 1 block) has none (TVM's stack limit is 1 KiB)."""
    sch = schedule(128, 24, 48, False, AVX512, **rule_args)
    assert _workspace_calls(sch, AVX512) == expected


def test_arm_neon_compiles_to_tbl():
    sch = schedule(37, 7, 13, True, ARM)
    assert LLVM_SHUFFLE[LUT16_SHUFFLE_NEON] in sch.mod.script()
    ex = tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), tvm.target.Target(ARM))
    asm = ex.mod.inspect_source("asm")
    assert any(line.split()[:1] == ["tbl"] for line in asm.splitlines())


def test_intrinsic_choice_per_target():
    assert shuffle_intrin_for_target(tvm.target.Target(AVX512)) == LUT16_SHUFFLE_AVX512
    assert shuffle_intrin_for_target(tvm.target.Target(AVX2)) == LUT16_SHUFFLE_AVX2
    assert shuffle_intrin_for_target(tvm.target.Target(ARM)) == LUT16_SHUFFLE_NEON
    plain = {"kind": "llvm", "mattr": ["+avx2"]}
    assert shuffle_intrin_for_target(tvm.target.Target(plain)) == LUT16_SHUFFLE_AVX2
    assert shuffle_intrin_for_target(tvm.target.Target({"kind": "llvm"})) is None


def test_plain_target_falls_back_to_scalar_and_stays_exact():
    codes, tables = random_inputs(37, 7, 13)
    out = run(codes, tables, np.ones(13), np.zeros(13), False, {"kind": "llvm"})
    np.testing.assert_array_equal(out, ref.lookup_accumulate(codes, tables).astype(np.float32))


def test_rule_ignores_other_kernels():
    func = lookup_dense_func(16, 4, 16, 8, False)
    assert LutLookupShuffleRule().apply(func, tvm.target.Target(AVX512), False) is None
    tagged = lookup_dense_shuffle_func(16, 4, 8)
    assert str(tagged.attrs["lut_tvm.kind"]) == LOOKUP_DENSE_SHUFFLE


@pytest.mark.parametrize("seed", [1, 4, 6, 7])
def test_tunable_samples_tiles_and_tensorizes(seed):
    """tunable=True samples the tiles (sample_categorical in the trace) and still tensorizes."""
    func = lookup_dense_shuffle_func(128, 8, 24, False)
    target = tvm.target.Target(AVX512)
    sch = LutLookupShuffleRule().apply(func, target, True)
    trace = str(sch.trace)
    assert "sample_categorical" in trace
    assert LLVM_SHUFFLE[LUT16_SHUFFLE_AVX512] in sch.mod.script()
    # Replay the trace without its decisions under another seed: the samples are drawn again
    # and every draw must still tensorize and compute the right thing.
    replay = s_tir.Schedule(func, seed=seed)
    s_tir.schedule.Trace(sch.trace.insts, {}).apply_to_schedule(replay, remove_postproc=True)
    assert LLVM_SHUFFLE[LUT16_SHUFFLE_AVX512] in replay.mod.script()
    if {"avx512f", "avx512bw"} <= cpu_flags():
        ex = tvm.compile(replay.mod["main"].with_attr("global_symbol", "main"), target)
        codes, tables = random_inputs(128, 8, 24)
        dev = tvm.cpu()
        tensors = [
            tvm.runtime.tensor(a, dev)
            for a in (
                np.ascontiguousarray(codes.T),
                np.ascontiguousarray(tables.transpose(2, 0, 1)),
                np.ones(24, np.float32),
                np.zeros(24, np.float32),
                np.zeros((128, 24), np.float32),
            )
        ]
        ex["main"](*tensors)
        np.testing.assert_array_equal(
            tensors[-1].numpy(), ref.lookup_accumulate(codes, tables).astype(np.float32)
        )
