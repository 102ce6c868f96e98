"""The int8 row encode against the float row encode: speed at MiniLM's and the conv shapes, and how
much the codes move on real MiniLM activations.

Usage: TVM_NUM_THREADS=1 .venv/bin/python -m benchmarks.encode_speed.int8 [--target native] [--rounds 7]

Speed: ``encode_dense_rows_func`` (float) and ``encode_dense_rows_int8_func`` (int8), each under
its default rule, checked first (float: codes of the NumPy reference away from near-ties; int8:
``lut_tvm.int8_encode_reference`` bit for bit), then timed interleaved round by round
(``time_evaluator`` medians; the table gives the median over rounds). Shapes: MiniLM's Linears at
M = 128 (D = 384 / 1536 at V = 16, 4, 2), and the conv encodes of ``run.CONV_SHAPES`` as dense row
encodes of their im2col rows (M = N OH OW, D = 9 C_in, V = 9): the int8 kernel has no conv window
reader yet, so these time the arithmetic of a conv encode, not its input reads.

Codes on real activations (``--skip-codes`` leaves it out): every Linear of all-MiniLM-L6-v2 on
held-out fortunes (``benchmarks.accuracy``'s data), centroids by k-means on the training texts'
rows (K = 16, V = 16 and 4); per layer the fraction of codes the int8 encode changes, and the layer
output's relative error ``||lut(codes) - x W|| / ||x W||`` with the float and the int8 codes
(int8 tables, one scale per layer, ``lut_tvm.reference.lut_output``).
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import tvm  # noqa: E402

from benchmarks.common.kernel_bench import compile_scheduled, write_markdown  # noqa: E402
from benchmarks.common.timing import time_evaluator_median  # noqa: E402
from benchmarks.encode_speed.run import CONV_SHAPES, K, NEAR_TIE, ROOT  # noqa: E402
from lut_tvm import int8_encode_reference as r8  # noqa: E402
from lut_tvm import reference as ref  # noqa: E402
from lut_tvm.targets import resolve_target  # noqa: E402
from schedules.lut_encode_rows_compute import encode_dense_rows_func  # noqa: E402
from schedules.lut_encode_rows_int8_compute import encode_dense_rows_int8_func  # noqa: E402
from schedules.rules.lut_encode_rows import LutEncodeRowsRule  # noqa: E402
from schedules.rules.lut_encode_rows_int8 import LutEncodeRowsInt8Rule  # noqa: E402

THREADS = int(os.environ["TVM_NUM_THREADS"])
# (label, M, D, V)
DENSE_SHAPES = [("MiniLM 384", 128, 384, 16), ("MiniLM 1536", 128, 1536, 16), ("MiniLM 384", 128, 384, 4),
                ("MiniLM 1536", 128, 1536, 4), ("MiniLM 384", 128, 384, 2)]


def speed_shapes() -> list[tuple]:
    conv = [(f"{label} (im2col)", n * h * w, c * 9, 9) for label, (n, c, h, w) in CONV_SHAPES]
    return DENSE_SHAPES + conv


def _kernels(rows: int, depth: int, sub_len: int, target) -> dict:
    """``{"float": (module, args), "int8": (module, args)}``, each checked against its reference."""
    num_codebooks = depth // sub_len
    rng = np.random.default_rng(depth + sub_len)
    data = rng.standard_normal((rows, depth)).astype(np.float32)
    centroids = rng.standard_normal((num_codebooks, K, sub_len)).astype(np.float32)
    norms = (centroids.astype(np.float64) ** 2).sum(-1).astype(np.float32)
    pu, nq, inv = r8.quantize_centroids(centroids)
    out = lambda: tvm.runtime.tensor(np.zeros((num_codebooks, rows), np.uint8))  # noqa: E731
    kernels = {
        "float": (compile_scheduled(encode_dense_rows_func(rows, num_codebooks, K, sub_len), LutEncodeRowsRule(), target),
                  [tvm.runtime.tensor(a) for a in (data, centroids, norms)] + [out()]),
        "int8": (compile_scheduled(encode_dense_rows_int8_func(rows, num_codebooks, K, sub_len), LutEncodeRowsInt8Rule(),
                                   target), [tvm.runtime.tensor(a) for a in (data, pu, nq, inv)] + [out()]),
    }
    for mod, args in kernels.values():
        mod["main"](*args)
    clear = ref.encode_margin(data, centroids).T >= NEAR_TIE
    if not np.array_equal(kernels["float"][1][-1].numpy()[clear], ref.encode(data, centroids).T[clear]):
        raise AssertionError(f"float encode {rows}x{depth} V={sub_len}: codes differ from the reference")
    if not np.array_equal(kernels["int8"][1][-1].numpy(), r8.encode_int8(data, centroids).T):
        raise AssertionError(f"int8 encode {rows}x{depth} V={sub_len}: codes differ from the reference")
    return kernels


def speed_table(target, opts) -> list[str]:
    lines = ["| shape | M | D | V | float us | int8 us | float / int8 |", "|---|---|---|---|---|---|---|"]
    for label, rows, depth, sub_len in speed_shapes():
        kernels = _kernels(rows, depth, sub_len, target)
        samples = {name: [] for name in kernels}
        for _ in range(opts.rounds):
            for name, (mod, args) in kernels.items():
                samples[name].append(time_evaluator_median(mod, args, opts.number, opts.repeat))
        med = {name: statistics.median(s) * 1e6 for name, s in samples.items()}
        lines.append(f"| {label} | {rows} | {depth} | {sub_len} | {med['float']:.1f} | {med['int8']:.1f} | "
                     f"{med['float'] / med['int8']:.2f}x |")
        print(lines[-1], flush=True)
    return lines


def minilm_rows(texts_train, texts_test) -> tuple[dict, dict, dict]:
    """Per MiniLM Linear: its input rows on the training and held-out texts, and its ``(W [D, N], b)``."""
    import torch  # pylint: disable=import-outside-toplevel

    from benchmarks.accuracy.tasks.minilm import MiniLMHidden, load_minilm, pack  # pylint: disable=C0415

    bert, tokenizer, _ = load_minilm()
    model = MiniLMHidden(bert).eval()
    linears = {name: mod for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    seen: dict = {}

    def hook(name):
        def record(_module, args, _out):
            seen.setdefault(name, []).append(args[0].detach().reshape(-1, args[0].shape[-1]).numpy())
        return record

    handles = [mod.register_forward_hook(hook(name)) for name, mod in linears.items()]
    result = []
    try:
        for texts in (texts_train, texts_test):
            seen.clear()
            with torch.no_grad():
                model(torch.from_numpy(pack(tokenizer, texts)))
            result.append({name: np.concatenate(rows) for name, rows in seen.items()})
    finally:
        for handle in handles:
            handle.remove()
    weights = {name: (mod.weight.detach().numpy().T.copy(), mod.bias.detach().numpy().copy())
               for name, mod in linears.items()}
    return result[0], result[1], weights


def codes_table(sub_lens, train_texts: int, test_texts: int, max_rows: int) -> list[str]:
    from benchmarks.accuracy.data import load_fortunes  # pylint: disable=import-outside-toplevel
    from lut_tvm.kmeans import kmeans_centroids  # pylint: disable=import-outside-toplevel

    train, _, test, _, _, _ = load_fortunes(seed=0)
    rows_train, rows_test, weights = minilm_rows(train[:train_texts], test[:test_texts])
    rng = np.random.default_rng(0)
    lines = ["| V | layers | codes changed (median / max over layers) | layer rel. error, float codes (median) | "
             "int8 codes (median) | int8 - float error (median / max) |", "|---|---|---|---|---|---|"]
    for sub_len in sub_lens:
        changed, err_f, err_i = [], [], []
        for name, (weight, _) in weights.items():
            fit = rows_train[name][rng.permutation(len(rows_train[name]))[:max_rows]]
            centroids = kmeans_centroids(fit, sub_len, K, seed=0)
            x = rows_test[name][:max_rows]
            exact = x.astype(np.float64) @ weight
            codes_f, codes_i = ref.encode(x, centroids), r8.encode_int8(x, centroids)
            changed.append(float((codes_f != codes_i).mean()))
            for codes, errs in ((codes_f, err_f), (codes_i, err_i)):
                out = ref.lut_output(codes, centroids, weight)
                errs.append(float(np.linalg.norm(out - exact) / np.linalg.norm(exact)))
        delta = np.asarray(err_i) - np.asarray(err_f)
        lines.append(f"| {sub_len} | {len(changed)} | {np.median(changed):.2%} / {max(changed):.2%} | "
                     f"{np.median(err_f):.4f} | {np.median(err_i):.4f} | {np.median(delta):+.4f} / {delta.max():+.4f} |")
        print(lines[-1], flush=True)
    return lines


def main():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.encode_speed.int8", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="native")
    parser.add_argument("--number", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--skip-codes", action="store_true")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "encode_speed_int8.md"))
    opts = parser.parse_args()
    target = resolve_target(opts.target, THREADS)
    load_start = os.getloadavg()
    speed = speed_table(target, opts)
    codes = [] if opts.skip_codes else codes_table((16, 4), train_texts=64, test_texts=32, max_rows=2048)
    load = os.getloadavg()
    write_markdown(opts.out, [
        f"# int8 vs float row encode, K = {K}, {THREADS} thread(s)", "",
        f"Command: `TVM_NUM_THREADS={THREADS} .venv/bin/python -m benchmarks.encode_speed.int8 --target {opts.target} "
        f"--number {opts.number} --repeat {opts.repeat} --rounds {opts.rounds}{' --skip-codes' if opts.skip_codes else ''}`",
        f"Target: `{target}`. 1/5/15-min load average {load_start[0]:.1f} / {load_start[1]:.1f} / "
        f"{load_start[2]:.1f} at the start, {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end (2 cores, "
        "shared): expect +-30% noise; the two kernels are interleaved round by round, so their ratio is fairer.",
        "See the docstring of `benchmarks/encode_speed/int8.py` for what is timed and measured.", "",
        "## Speed (median over rounds)", "", *speed, "",
        *([] if opts.skip_codes else ["## Codes on real MiniLM activations (64 training / 32 held-out fortunes, "
                                      "up to 2048 rows per layer)", "", *codes, ""]),
    ])


if __name__ == "__main__":
    main()
