"""K sweep of the shuffle path: row encode + lookup at K = 16 / 32 / 64 and several V on one dense
shape (default: a MiniLM projection, M = 128, D = N = 384), at one thread.

K = 16 looks up with ``vpshufb``; K = 32 / 64 with ``vpermb`` (``schedules.intrin.lut_vbmi``),
timed only where the host CPU has AVX-512 VBMI. The encode (``encode_dense_rows_func`` under
``LutEncodeRowsRule``) costs ``2 D K`` flops per row, so it grows with K while the lookup does not:
both are reported. Each output is checked against the NumPy reference before it is timed. All
kernels are timed in interleaved rounds (``benchmarks.common.timing.interleaved_samples``, median
over rounds, and the minimum: on a shared machine the least disturbed round), so a change of the
machine's load falls on every K alike.
"""

from __future__ import annotations

import statistics

import numpy as np
import tvm

from benchmarks.common.kernel_bench import compile_scheduled
from benchmarks.common.timing import interleaved_samples
from lut_tvm import reference as ref
from lut_tvm.target_features import host_features
from schedules.lut_encode_rows_compute import encode_dense_rows_func
from schedules.lut_shuffle_compute import lookup_dense_shuffle_func
from schedules.rules.lut_encode_rows import LutEncodeRowsRule
from schedules.rules.lut_lookup_shuffle import LutLookupShuffleRule

# A target with VBMI for every K (the K = 16 kernel is the same as on skylake-avx512).
VBMI_TARGET = {"kind": "llvm", "mcpu": "znver4"}
CENTROIDS = (16, 32, 64)
SUB_LENS = (2, 4)


def _tensors(*arrays):
    return [tvm.runtime.tensor(np.ascontiguousarray(a), tvm.cpu()) for a in arrays]


def build_k(rows, dim, out_features, sub_len, num_centroids, target):
    """``(encode call, lookup call)`` of one (V, K) point, both outputs checked against the
    reference."""
    rng = np.random.default_rng(0)
    num_codebooks = dim // sub_len
    x = rng.standard_normal((rows, dim)).astype(np.float32)
    centroids = rng.standard_normal((num_codebooks, num_centroids, sub_len)).astype(np.float32)
    norms = (centroids.astype(np.float64) ** 2).sum(-1).astype(np.float32)
    tables = rng.integers(-128, 128, (num_codebooks, num_centroids, out_features)).astype(np.int8)

    encode = compile_scheduled(encode_dense_rows_func(rows, num_codebooks, num_centroids, sub_len),
                               LutEncodeRowsRule(), target)
    encode_args = _tensors(x, centroids, norms, np.zeros((num_codebooks, rows), np.uint8))
    encode["main"](*encode_args)
    codes = encode_args[-1].numpy().T
    # Random data may hold a near-tie the float32 encode rounds either way: compare where none is.
    clear = ref.encode_margin(x, centroids) > 1e-3
    np.testing.assert_array_equal(codes[clear], ref.encode(x, centroids)[clear])

    lookup = compile_scheduled(
        lookup_dense_shuffle_func(rows, num_codebooks, out_features, num_centroids=num_centroids),
        LutLookupShuffleRule(), target)
    lookup_args = _tensors(codes.T, tables.transpose(2, 0, 1), np.ones(out_features, np.float32),
                           np.zeros(out_features, np.float32), np.zeros((rows, out_features), np.float32))
    lookup["main"](*lookup_args)
    np.testing.assert_array_equal(lookup_args[-1].numpy(),
                                  ref.lookup_accumulate(codes, tables).astype(np.float32))
    return (lambda: encode["main"](*encode_args)), (lambda: lookup["main"](*lookup_args))


def centroid_lines(rows, dim, out_features, number, repeat, threads, sub_lens=SUB_LENS) -> list[str]:
    """The K-sweep table: ``repeat`` interleaved rounds of ``number`` calls of every kernel."""
    target = tvm.target.Target({**VBMI_TARGET, "num-cores": threads})
    vbmi = host_features().byte_permute_128
    lines = [f"## K sweep: M = {rows}, D = {dim}, N = {out_features}, target `{VBMI_TARGET}`", "",
             "| V | K | lookup instr | encode us (median / min) | lookup us (median / min) "
             "| encode + lookup us (median / min) |", "|" + "---|" * 6]
    if not vbmi:
        lines[1] = "(host CPU has no AVX-512 VBMI: K = 32 / 64 not timed)"
    points = [(v, k) for v in sub_lens for k in CENTROIDS if k == 16 or vbmi]
    calls = {}
    for sub_len, num_centroids in points:
        encode, lookup = build_k(rows, dim, out_features, sub_len, num_centroids, target)
        calls[(sub_len, num_centroids, "encode")] = encode
        calls[(sub_len, num_centroids, "lookup")] = lookup
    samples = interleaved_samples(calls, repeat, number)
    for sub_len, num_centroids in points:
        enc, look = samples[(sub_len, num_centroids, "encode")], samples[(sub_len, num_centroids, "lookup")]
        both = [a + b for a, b in zip(enc, look)]
        instr = "vpshufb zmm" if num_centroids == 16 else "vpermb zmm"
        cells = " | ".join(f"{statistics.median(s) * 1e6:.1f} / {min(s) * 1e6:.1f}" for s in (enc, look, both))
        lines.append(f"| {sub_len} | {num_centroids} | {instr} | {cells} |")
        print(lines[-1], flush=True)
    return lines
