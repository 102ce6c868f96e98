"""The row-vectorized encode (codes [C, M]) under its rule, against the NumPy reference, and as
the encode the dense rewrite emits before the shuffle lookup."""

import numpy as np
import pytest
import tvm
from tvm import relax, tirx

from lut_tvm import _tvm_compat
from lut_tvm import reference as ref
from lut_tvm.compiler import legalize_passes
from lut_tvm.plan import LayerPlan, Plan
from lut_tvm.targets import host_cpu_flags
from lut_tvm.testing import assert_no_near_ties, check_codes, loop_kinds, lut_calls, relax_module
from lut_tvm.weights import LayerKind, fingerprint
from relay_passes.rewrite_dense_to_lut import RewriteDenseToLUT
from schedules.attrs import LutKind
from schedules.lut_encode_rows_compute import argmin_chains, encode_dense_rows_func
from schedules.rules import default_rules
from schedules.rules.lut_encode_rows import LutEncodeRowsRule

AVX512 = {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}
AVX2 = {"kind": "llvm", "mcpu": "haswell", "num-cores": 2}
ARM = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}

RUNNABLE = [
    pytest.param(AVX512, id="avx512", marks=pytest.mark.skipif(
        "avx512f" not in host_cpu_flags(), reason="CPU has no AVX-512")),
    pytest.param(AVX2, id="avx2", marks=pytest.mark.skipif(
        "avx2" not in host_cpu_flags(), reason="CPU has no AVX2")),
]
HOST = tvm.target.Target(AVX512 if "avx512f" in host_cpu_flags() else {"kind": "llvm"})


def assert_parallel_and_vectorized(func: tirx.PrimFunc):
    kinds = loop_kinds(func)
    assert tirx.ForKind.PARALLEL in kinds, func.script()
    assert tirx.ForKind.VECTORIZED in kinds, func.script()


def schedule(shape, target, xt_mode="auto"):
    func = encode_dense_rows_func(*shape)
    sch = LutEncodeRowsRule(xt_mode).apply(func, tvm.target.Target(target), False)
    assert sch is not None, "the rule must accept its own kernel"
    scheduled = sch.mod["main"]
    assert scheduled.attrs["lut_tvm.kind"] == LutKind.ENCODE_DENSE_ROWS
    assert_parallel_and_vectorized(scheduled)
    return scheduled


def build(shape, target):
    target = tvm.target.Target(target)
    return tvm.compile(schedule(shape, target).with_attr("global_symbol", "main"), target)


def norms_of(centroids):
    return (centroids.astype(np.float64) ** 2).sum(-1).astype(np.float32)


def run_encode(ex, data, centroids):
    codes = tvm.runtime.tensor(np.full((centroids.shape[0], data.shape[0]), 251, np.uint8))
    inputs = (data, centroids, norms_of(centroids))
    ex(*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in inputs], codes)
    return codes.numpy()


def assert_codes_match(codes_t, rows, centroids):
    """``codes_t [C, M]`` are the nearest centroids (either one at a near-tie: ``check_codes``)."""
    assert codes_t.dtype == np.uint8
    check_codes(codes_t.T, rows, centroids)


def random_case(rows, num_codebooks, num_centroids, sub_len, seed):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((rows, num_codebooks * sub_len)).astype(np.float32)
    centroids = rng.standard_normal((num_codebooks, num_centroids, sub_len)).astype(np.float32)
    if sub_len == 1:  # random scalars crowd together (many near-ties): spread them, shuffled
        grid = np.linspace(-2.5, 2.5, num_centroids)
        centroids = np.stack([rng.permutation(grid) for _ in range(num_codebooks)])[..., None]
        centroids = centroids.astype(np.float32)
    data[0] = centroids[:, -1].reshape(-1)  # row 0 is made of the last centroids
    return data, centroids


# (M, C, K, V): M = 37 and 100 move the last tile back (it overlaps the one before), M = 5 is
# one partial tile, V = 1 has no sum, K = 32 runs two centroid passes per chain, K = 5 one
# chain, K = 130 codes above 127, V = 40 the transposed-tile path; M a multiple of 16 with D a
# multiple of 16 takes the in-register transposes (48 x 6 x 8: groups of codebooks whose
# features straddle a 16-feature block; 16 x 5 x 16: one row tile).
SHAPES = [
    (48, 6, 16, 8),
    (16, 5, 16, 16),
    (5, 7, 16, 4),
    (37, 7, 16, 9),
    (100, 24, 16, 16),
    (128, 96, 16, 4),
    (37, 24, 32, 1),
    (100, 7, 32, 4),
    (128, 24, 32, 16),
    (37, 3, 5, 9),
    (37, 3, 130, 4),
    (100, 2, 16, 40),
]


@pytest.mark.parametrize("target", RUNNABLE)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{m}x{c}x{k}x{v}" for m, c, k, v in SHAPES])
def test_codes_match_reference(shape, target):
    rows, num_codebooks, num_centroids, sub_len = shape
    data, centroids = random_case(*shape, seed=rows * num_codebooks + sub_len)
    codes = run_encode(build(shape, target), data, centroids)
    assert_codes_match(codes, data, centroids)
    assert (codes[:, 0] == num_centroids - 1).all()


def test_centroid_rows_and_first_index_wins_ties():
    """Rows made of centroids encode to them exactly; a duplicated centroid gives the first index,
    also when the duplicate sits in the other argmin chain."""
    rows, num_codebooks, num_centroids, sub_len = 37, 7, 16, 3
    assert argmin_chains(num_centroids) > 1
    rng = np.random.default_rng(11)
    centroids = rng.standard_normal((num_codebooks, num_centroids, sub_len)).astype(np.float32)
    centroids[:, 9] = centroids[:, 4]  # across chains (0-7 | 8-15)
    centroids[:, 3] = centroids[:, 1]  # within a chain
    want = rng.integers(0, num_centroids, (rows, num_codebooks))
    data = centroids[np.arange(num_codebooks)[None, :], want].reshape(rows, -1)
    codes = run_encode(build((rows, num_codebooks, num_centroids, sub_len), HOST), data, centroids)
    want = np.where(want == 9, 4, np.where(want == 3, 1, want))
    np.testing.assert_array_equal(codes, want.T)


def test_tile_scratch_stays_on_the_stack():
    """No per-tile TVMBackendAllocWorkspace: every scratch buffer of a tile is under 1 KiB.

    (A ``local`` scope or a 1 KiB buffer is lowered to a workspace call in every tile, which
    cost 2x here.)"""
    target = tvm.target.Target(AVX512)
    func = schedule((128, 24, 16, 16), target, "inline").with_attr("global_symbol", "main")
    lowered = []

    @tvm.instrument.pass_instrument
    class AfterBuiltinLowering:  # pylint: disable=too-few-public-methods
        def run_after_pass(self, mod, info):
            if info.name == "tirx.LowerTVMBuiltin":
                lowered.append(mod.script())

    with tvm.transform.PassContext(instruments=[AfterBuiltinLowering()]):
        tvm.compile(func, target)
    assert lowered and all("AllocWorkspace" not in text for text in lowered)


@pytest.mark.parametrize("target, shuffles", [(AVX512, ("vpermt2", "vshuff")),
                                              (AVX2, ("vperm2f128", "vunpck", "vshufps"))],
                         ids=["avx512", "avx2"])
def test_dense_input_transposed_in_registers(target, shuffles):
    """M = 128, D = 384: the default reads x through the transpose intrinsic (shuffles, no
    per-element inserts), in codebook groups of a tunable size, codes equal to the reference."""
    target = tvm.target.Target(target)
    shape = (128, 24, 16, 16)
    func = encode_dense_rows_func(*shape)
    sch = LutEncodeRowsRule().apply(func, target, True)
    assert any(inst.kind.name == "SampleCategorical" for inst in sch.trace.insts)
    assert any(inst.kind.name == "Tensorize" for inst in sch.trace.insts)
    ex = tvm.compile(sch.mod["main"].with_attr("global_symbol", "main"), target)
    asm = _tvm_compat.executable_assembly(ex)
    assert "vinsertps" not in asm and any(name in asm for name in shuffles)
    inline_asm = _tvm_compat.executable_assembly(
        tvm.compile(schedule(shape, target, "inline").with_attr("global_symbol", "main"), target))
    assert "vinsertps" in inline_asm  # what the transposes replace
    if ("avx2" if str(target.attrs["mcpu"]) == "haswell" else "avx512f") in host_cpu_flags():
        data, centroids = random_case(*shape, seed=3)
        assert_codes_match(run_encode(ex, data, centroids), data, centroids)


def test_arm_neon_compiles_to_vector_fma():
    ex = build((37, 7, 16, 9), ARM)
    module = ex if hasattr(ex, "inspect_source") else ex.mod
    asm = module.inspect_source("asm")
    assert "fmla" in asm and ".4s" in asm


def test_generic_target_schedules():
    """A target without mcpu (8 lanes assumed) still gets a parallel, vectorized schedule."""
    shape = (37, 7, 16, 4)
    data, centroids = random_case(*shape, seed=5)
    codes = run_encode(build(shape, {"kind": "llvm"}), data, centroids)
    assert_codes_match(codes, data, centroids)


def test_rule_ignores_other_kernels():
    from schedules.lut_kernels import encode_dense_func  # pylint: disable=import-outside-toplevel

    assert LutEncodeRowsRule().apply(encode_dense_func(8, 2, 16, 4), HOST, False) is None


@pytest.mark.skipif("avx512bw" not in host_cpu_flags(), reason="CPU has no AVX-512BW")
def test_dense_rewrite_uses_row_encode_before_shuffle_lookup():
    """128 x 384 -> 384 with V = 16: row encode + shuffle lookup, scheduled by the default rules,
    equal to the reference LUT layer."""
    target = tvm.target.Target(AVX512)
    rng = np.random.default_rng(7)
    weight = rng.standard_normal((384, 384)).astype(np.float32)
    centroids = rng.standard_normal((24, 16, 16)).astype(np.float32)
    layer = LayerPlan("fc", LayerKind.DENSE, weight.shape, fingerprint(weight), centroids)
    mod = relax_module((128, 384), lambda bb, x: bb.emit(relax.op.matmul(x, relax.const(weight))))
    with target:
        rewritten = RewriteDenseToLUT(Plan([layer]))(mod)
    assert [kind for kind, _ in lut_calls(rewritten)] == [
        LutKind.ENCODE_DENSE_ROWS, LutKind.LOOKUP_DENSE_SHUFFLE]
    encode = lut_calls(rewritten)[0][1]
    assert tuple(int(d) for d in encode.ty.shape.values) == (24, 128)

    with target:
        lowered = tvm.transform.Sequential(legalize_passes())(rewritten)
        scheduled = _tvm_compat.default_schedule_pass(default_rules())(lowered)
    encode_funcs = [f for _, f in scheduled.functions_items() if isinstance(f, tirx.PrimFunc)
                    and f.attrs is not None and "lut_tvm.kind" in f.attrs
                    and str(f.attrs["lut_tvm.kind"]) == LutKind.ENCODE_DENSE_ROWS]
    assert len(encode_funcs) == 1
    assert_parallel_and_vectorized(encode_funcs[0])

    x = rng.standard_normal((128, 384)).astype(np.float32)
    assert_no_near_ties(x, centroids)
    vm = relax.VirtualMachine(_tvm_compat.build_executable(scheduled, target), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, ref.lut_matmul(x, centroids, weight), rtol=1e-5, atol=1e-5)
