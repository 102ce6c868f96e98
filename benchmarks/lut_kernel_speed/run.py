"""LUT lookup kernels at one thread: shuffle lookup vs gather lookup vs torch fp32 matmul.

Usage: TVM_NUM_THREADS=1 .venv/bin/python -m benchmarks.lut_kernel_speed [--rows 128] [--repeat 15]
(``TVM_NUM_THREADS=2`` for two threads: torch then gets as many; the report says which.)
``--k-sweep`` runs only the K = 16 / 32 / 64 sweep of ``benchmarks.lut_kernel_speed.centroids``
(encode + lookup at V = 2, 4 on M = 128, D = N = 384; ``--dim`` / ``--out-features`` for others).

For M rows and each (D, N) with V = 16 (C = D / 16 codebooks, K = 16):

* shuffle — ``schedules.lut_shuffle_compute.lookup_dense_shuffle_func`` under
  ``LutLookupShuffleRule`` (codes [C, M], tables [N, C, 16], vpshufb / int16 accumulation);
* gather  — ``schedules.lut_kernels.lookup_dense_func`` under ``LutLookupRule`` (codes [M, C],
  tables [C, 16, N], table rows gathered into int32);
* torch   — ``torch.matmul`` fp32 [M, D] x [D, N] (oneDNN), ``torch.set_num_threads(1)``.

TVM kernels are timed with ``time_evaluator`` (median of ``repeat`` runs, each averaging
``number`` calls); torch with repeated ``time.perf_counter`` (median of the same). All three
include the scale/bias epilogue where they have one (torch: none, a plain matmul).
GFLOP/s-equivalent = 2 M D N / t. Lookups/s = M N C / t, compared with the shuffle peak
(``benchmarks.common.machine.shuffle_peak``: 64 byte lookups per ``vpshufb zmm`` x 1 shuffle per
cycle (port 5 only on Skylake-SP / Cascade Lake) x the clock read from /proc/cpuinfo).
The encode step is not included (lookup kernels only).

Conv lookups (``--conv``, on by default): ``schedules.lut_conv_shuffle_compute.lookup_conv2d_shuffle_func``
under the same rule, code rows ``m = (n*OH + y)*OW + x`` and an NCHW output, for the shapes in
``CONV_SHAPES`` (name, NCHW output shape, C). Only the shuffle kernel is timed there.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TVM_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import tvm  # noqa: E402

from benchmarks.common.machine import shuffle_peak  # noqa: E402
from benchmarks.common.kernel_bench import compile_scheduled, write_markdown  # noqa: E402
from benchmarks.common.timing import median_call_seconds, time_evaluator_median  # noqa: E402
from benchmarks.lut_kernel_speed.centroids import centroid_lines  # noqa: E402
from schedules.lut_conv_shuffle_compute import lookup_conv2d_shuffle_func  # noqa: E402
from schedules.lut_kernels import lookup_dense_func  # noqa: E402
from schedules.lut_shuffle_compute import lookup_dense_shuffle_func  # noqa: E402
from schedules.rules.lut_lookup import LutLookupRule  # noqa: E402
from schedules.rules.lut_lookup_shuffle import LutLookupShuffleRule  # noqa: E402

SHAPES = [(384, 384), (384, 1536), (1536, 384)]
SUB_LEN = 16
# (name, NCHW output shape, codebooks C): M = N * OH * OW code rows, O output channels.
CONV_SHAPES = [
    ("ResNet-18 layer1 3x3", (1, 64, 32, 32), 64),
    ("digits CNN layer1", (16, 16, 20, 20), 16),
    ("layer3.shortcut 1x1", (16, 64, 5, 5), 8),
]
K = 16
TARGET = {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 1}


def bench_shape(rows, dim, out_features, number, repeat, target):
    rng = np.random.default_rng(0)
    num_codebooks = dim // SUB_LEN
    codes = rng.integers(0, K, (rows, num_codebooks)).astype(np.uint8)
    tables = rng.integers(-127, 128, (num_codebooks, K, out_features)).astype(np.int8)
    scale = np.full(out_features, 0.01, np.float32)
    bias = np.zeros(out_features, np.float32)
    dev = tvm.cpu()
    expected = tables[np.arange(num_codebooks)[None], codes.astype(np.int64)].astype(np.int32).sum(1)
    expected = expected.astype(np.float32) * 0.01

    shuffle = compile_scheduled(
        lookup_dense_shuffle_func(rows, num_codebooks, out_features), LutLookupShuffleRule(), target
    )
    shuffle_args = [
        tvm.runtime.tensor(a, dev)
        for a in (np.ascontiguousarray(codes.T), np.ascontiguousarray(tables.transpose(2, 0, 1)),
                  scale, bias, np.zeros((rows, out_features), np.float32))
    ]
    gather = compile_scheduled(
        lookup_dense_func(rows, num_codebooks, K, out_features, False), LutLookupRule(), target
    )
    gather_args = [
        tvm.runtime.tensor(a, dev)
        for a in (codes, tables, scale, bias, np.zeros((rows, out_features), np.float32))
    ]
    for mod, args in ((shuffle, shuffle_args), (gather, gather_args)):
        mod["main"](*args)
        np.testing.assert_allclose(args[-1].numpy(), expected, rtol=1e-5, atol=1e-4)

    x = torch.randn(rows, dim)
    w = torch.randn(dim, out_features)
    return {
        "shuffle": time_evaluator_median(shuffle, shuffle_args, number, repeat),
        "gather": time_evaluator_median(gather, gather_args, number, repeat),
        "torch": median_call_seconds(lambda: torch.matmul(x, w), number, repeat),
        "lookups": rows * out_features * num_codebooks,
        "flops": 2 * rows * dim * out_features,
    }


def bench_conv_shape(out_shape, num_codebooks, number, repeat, target):
    """Seconds per call of the conv shuffle lookup writing ``out_shape`` (NCHW), checked exactly."""
    batch, out_channels, out_h, out_w = out_shape
    rows = batch * out_h * out_w
    rng = np.random.default_rng(1)
    codes = rng.integers(0, K, (rows, num_codebooks)).astype(np.uint8)
    tables = rng.integers(-127, 128, (num_codebooks, K, out_channels)).astype(np.int8)
    expected = tables[np.arange(num_codebooks)[None], codes.astype(np.int64)].astype(np.int32).sum(1)
    expected = expected.reshape(batch, out_h, out_w, out_channels).transpose(0, 3, 1, 2)
    mod = compile_scheduled(
        lookup_conv2d_shuffle_func(out_shape, num_codebooks), LutLookupShuffleRule(), target
    )
    args = [
        tvm.runtime.tensor(a, tvm.cpu())
        for a in (np.ascontiguousarray(codes.T), np.ascontiguousarray(tables.transpose(2, 0, 1)),
                  np.ones(out_channels, np.float32), np.zeros(out_channels, np.float32),
                  np.zeros(out_shape, np.float32))
    ]
    mod["main"](*args)
    np.testing.assert_array_equal(args[-1].numpy(), expected.astype(np.float32))
    return time_evaluator_median(mod, args, number, repeat), rows * out_channels * num_codebooks


def conv_lines(number, repeat, target, peak) -> list[str]:
    """The conv lookup table's rows (printed as they come)."""
    lines = ["| layer | NCHW out | M | C | N | shuffle us | Glookup/s | % of shuffle peak |",
             "|" + "---|" * 8]
    for name, out_shape, num_codebooks in CONV_SHAPES:
        seconds, lookups = bench_conv_shape(out_shape, num_codebooks, number, repeat, target)
        rows = out_shape[0] * out_shape[2] * out_shape[3]
        lines.append(
            f"| {name} | {'x'.join(map(str, out_shape))} | {rows} | {num_codebooks} | {out_shape[1]} "
            f"| {seconds * 1e6:.1f} | {lookups / seconds / 1e9:.2f} | {100 * lookups / seconds / peak:.1f} |"
        )
        print(lines[-1], flush=True)
    return lines


def main():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lut_kernel_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--number", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--no-conv", dest="conv", action="store_false", help="skip the conv lookups")
    parser.add_argument("--out", default=None,
                        help="markdown to write (default benchmarks/results/lut_kernel_speed.md, "
                             "with --k-sweep lut_kernel_speed_k.md)")
    parser.add_argument("--k-sweep", action="store_true",
                        help="only the K = 16 / 32 / 64 sweep (encode + lookup, V = 2 and 4)")
    parser.add_argument("--dim", type=int, default=384, help="D of the K sweep")
    parser.add_argument("--out-features", type=int, default=384, help="N of the K sweep")
    opts = parser.parse_args()
    threads = int(os.environ["TVM_NUM_THREADS"])
    torch.set_num_threads(threads)
    if opts.k_sweep:
        return k_sweep(opts, threads)
    opts.out = opts.out or os.path.join(ROOT, "benchmarks", "results", "lut_kernel_speed.md")
    target = tvm.target.Target({**TARGET, "num-cores": threads})
    load_before = os.getloadavg()
    peak_info = shuffle_peak()
    peak = peak_info["lookups_per_s"]

    header = (
        "| D | N | C | shuffle us | gather us | torch us | shuffle GFLOP/s-eq | gather GFLOP/s-eq "
        "| torch GFLOP/s | gather/shuffle | torch/shuffle | shuffle Glookup/s | % of shuffle peak |"
    )
    lines = [header, "|" + "---|" * 13]
    for dim, out_features in SHAPES:
        r = bench_shape(opts.rows, dim, out_features, opts.number, opts.repeat, target)
        lines.append(
            f"| {dim} | {out_features} | {dim // SUB_LEN} "
            f"| {r['shuffle'] * 1e6:.1f} | {r['gather'] * 1e6:.1f} | {r['torch'] * 1e6:.1f} "
            f"| {r['flops'] / r['shuffle'] / 1e9:.1f} | {r['flops'] / r['gather'] / 1e9:.1f} "
            f"| {r['flops'] / r['torch'] / 1e9:.1f} "
            f"| {r['gather'] / r['shuffle']:.2f} | {r['torch'] / r['shuffle']:.2f} "
            f"| {r['lookups'] / r['shuffle'] / 1e9:.2f} | {100 * r['lookups'] / r['shuffle'] / peak:.1f} |"
        )
        print(lines[-1], flush=True)
    conv = conv_lines(opts.number, opts.repeat, target, peak) if opts.conv else []
    load = ", ".join(f"{a:.2f}" for a in load_before + os.getloadavg()[:1])

    notes = [
        f"# LUT lookup kernel speed, M = {opts.rows}, V = {SUB_LEN}, K = {K}, {threads} thread(s)",
        "",
        f"Command: `TVM_NUM_THREADS={threads} .venv/bin/python -m benchmarks.lut_kernel_speed --rows {opts.rows} "
        f"--number {opts.number} --repeat {opts.repeat}`",
        f"Target: `{dict(TARGET, **{'num-cores': threads})}`; torch {torch.__version__} fp32 matmul, "
        f"{threads} thread(s). Medians.",
        f"Shuffle peak = {peak_info['text']} (one core; the % columns use it for any thread count).",
        "GFLOP/s-eq = 2 M D N / t (the matmul the lookup replaces). Lookups = M N C. Encode not included.",
        f"Load average (1, 5, 15 min) before, then 1 min after: {load}. The machine is shared (2 cores, "
        "other jobs running): expect +-30% run-to-run noise.",
        "",
        header,
        *lines[1:],
        "",
    ]
    if conv:
        notes += ["## Conv lookups (NCHW output, shuffle kernel only)", "", *conv, ""]
    write_markdown(opts.out, notes)



def k_sweep(opts, threads: int) -> None:
    """``--k-sweep``: the K table of ``benchmarks.lut_kernel_speed.centroids``, with the load."""
    load_before = os.getloadavg()
    lines = centroid_lines(opts.rows, opts.dim, opts.out_features, opts.number, opts.repeat, threads)
    load = ", ".join(f"{a:.2f}" for a in load_before + os.getloadavg()[:1])
    notes = [
        f"# LUT kernels at K = 16 / 32 / 64, {threads} thread(s)",
        "",
        f"Command: `TVM_NUM_THREADS={threads} .venv/bin/python -m benchmarks.lut_kernel_speed --k-sweep "
        f"--rows {opts.rows} --dim {opts.dim} --out-features {opts.out_features} --number {opts.number} "
        f"--repeat {opts.repeat}`. Median and minimum over {opts.repeat} interleaved rounds of {opts.number} "
        "calls per kernel; outputs checked against the reference.",
        f"Load average (1, 5, 15 min) before, then 1 min after: {load}. The machine is shared (2 cores, "
        "other jobs running): expect +-30% run-to-run noise.",
        "",
        *lines,
        "",
    ]
    write_markdown(opts.out or os.path.join(ROOT, "benchmarks", "results", "lut_kernel_speed_k.md"), notes)
