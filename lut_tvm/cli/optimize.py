"""lut-tvm optimize: the fastest LUT plan whose metric on evaluation data stays within a budget."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import LutTvmError, ModelLoadError
from ..files import user_cache_dir
from ..optimizer.inputs import (DEFAULT_REFIT, DEFAULT_VERIFY_FRACTION, METRICS, REFITS, check_eval, check_settings,
                                check_verify_fraction)
from .common import MODEL_HELP, load_array



def load_eval(path: str, metric: str):
    """``(x, y or None)`` from an .npz with ``x`` and (for accuracy) integer ``y``."""
    file = Path(path)
    if not file.is_file():
        raise ModelLoadError(f"evaluation file {path!r} does not exist")
    try:
        data = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ModelLoadError(f"evaluation file {path!r} is not an .npz: {err}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ModelLoadError(f"evaluation file {path!r} must be an .npz with arrays 'x' and 'y'")
    with data:
        if "x" not in data.files:
            raise LutTvmError(f"evaluation file {path!r} has no array 'x' (has {data.files})")
        if metric == "accuracy" and "y" not in data.files:
            raise LutTvmError(f"evaluation file {path!r} has no labels 'y', which --metric accuracy needs "
                              "(add 'y' or use --metric cosine)")
        return data["x"], data["y"] if "y" in data.files else None


def check_args(args):
    """Everything checkable without TVM or torch: files, arrays and their shapes; returns the arrays."""
    check_settings(args.metric, args.budget)
    check_verify_fraction(args.verify_fraction)
    if not Path(args.model).is_file():
        raise ModelLoadError(f"model file {args.model!r} does not exist")
    if Path(args.model).suffix not in (".onnx", ".pt2"):
        raise ModelLoadError(f"model file {args.model!r} is neither .onnx nor .pt2")
    calibration = load_array(args.calibration, "calibration")
    x, y = load_eval(args.eval, args.metric)
    x, y = check_eval(args.metric, x, y, f"evaluation file {args.eval!r}")
    if calibration.shape[1:] != x.shape[1:]:
        raise LutTvmError(f"calibration file {args.calibration!r} has samples of shape "
                          f"{list(calibration.shape[1:])}, evaluation file {args.eval!r} has "
                          f"{list(x.shape[1:])}")
    return calibration, x, y


def cmd_optimize(args) -> None:
    calibration, x, y = check_args(args)
    from ..optimizer import optimize  # pylint: disable=import-outside-toplevel

    result = optimize(args.model, calibration, x, y, budget=args.budget, metric=args.metric,
                      target=args.target, cache_dir=args.cache_dir or user_cache_dir("optimize"), sub_lens=args.sub_lens,
                      layers=args.only, batch=args.batch, timing_repeat=args.repeat, seed=args.seed,
                      peers=not args.no_peers, prune=args.prune, refit=args.refit,
                      int8=not args.no_int8, verify_fraction=args.verify_fraction)
    report_dir = Path(args.report) if args.report else Path(args.output).with_suffix("").with_name(
        Path(args.output).stem + "_report")
    written = result.save(args.output, report_dir)
    rep = result.report
    lat = rep["latency_ms"]
    for row in rep["layers"]:
        print(f"  {row['layer']:<24} {row['shape']:<22} {row['why']}")
    if rep.get("slower_than_dense"):
        print(f"the chosen plan measured {rep['slower_than_dense']['measured_ms']:.4f} ms, slower than the dense model "
              f"({rep['slower_than_dense']['dense_ms']:.4f} ms): the plan keeps every layer dense")
    elif not any(row["chosen_V"] or row.get("int8") for row in rep["layers"]):
        print("no layer is worth a LUT here: each candidate was slower than its dense layer or broke the "
              "budget (per layer above); the plan keeps every layer dense")
    refit = rep.get("refit") or {}
    if refit.get("loss_after") is not None:
        print(f"refit ({refit['method']}): plan loss {refit['loss_before']:.2f} -> {refit['loss_after']:.2f} points "
              f"(refit kept for {len(refit['refit_layers'])} layer(s)); {len(refit['extended'])} extension(s) tried, "
              f"{sum(e['accepted'] for e in refit['extended'])} accepted"
              + (f"; then dropped ({refit['dropped']}): every layer dense" if refit.get("dropped") else ""))
    held = rep.get("held_back") or {}
    if held.get("samples"):
        print(f"held-back check on {held['samples']} eval samples the search never saw: loss {held['loss']:.2f} "
              f"± {held['standard_error']:.2f} points"
              + (f"; backed off {', '.join(held['backed_off'])}" if held["backed_off"] else ""))
    print(f"{rep['metric']}: original {rep['original_metric']:.2f}, chosen {rep['chosen_metric_compiled']:.2f} "
          f"(compiled; budget {rep['budget']})")
    print(f"latency: dense {lat['dense_measured']:.4f} ms, chosen predicted {lat['predicted']:.4f} ms, "
          f"measured {lat['measured']:.4f} ms; saving predicted {lat['predicted_saving']:.4f} ms, measured "
          f"{lat['measured_saving']:.4f} ms ({rep['threads']} thread(s), batch {rep['batch']})")
    print("wrote " + ", ".join(str(p) for p in written))


def _sub_len(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--sub-lens takes positive integers, got {text!r}")
    return int(text)


def register(sub) -> None:
    """Add the subcommand to the subparsers ``sub``."""
    opt = sub.add_parser("optimize", help="find the fastest LUT plan within an accuracy budget",
                         description="Measure each LUT candidate's effect on the metric (one layer at a "
                         "time) and its kernel's latency on the target, search for the fastest plan whose "
                         "metric on the evaluation data stays within the budget of the original, verify "
                         "it on the compiled model, and write the plan and a report.")
    opt.add_argument("model", help=MODEL_HELP)
    opt.add_argument("--calibration", required=True, help=".npy of input samples for the k-means centroids")
    opt.add_argument("--eval", required=True,
                     help=".npz with 'x' (inputs) and, for --metric accuracy, 'y' (integer labels)")
    opt.add_argument("--budget", type=float, default=1.0,
                     help="points of accuracy (or of mean cosine x 100) the plan may lose (default 1.0)")
    opt.add_argument("--metric", choices=METRICS, default="accuracy",
                     help="accuracy: argmax vs y; cosine: mean cosine to the original model's outputs")
    opt.add_argument("--target", default="native", help="target to measure on (default: native)")
    opt.add_argument("-o", "--output", default="plan.npz", help="plan file to write (default: plan.npz)")
    opt.add_argument("--report", default=None,
                     help="folder for report.md/.json and frontier.png (default: <output stem>_report)")
    opt.add_argument("--cache-dir", default=None,
                     help="measurement cache (centroids, kernel timings, metrics); a re-run resumes from "
                     "it (default: $XDG_CACHE_HOME/lut_tvm/optimize, i.e. ~/.cache/lut_tvm/optimize)")
    opt.add_argument("--sub-lens", nargs="+", type=_sub_len, default=[2, 4, 8, 9, 16, 32], metavar="V",
                     help="V values to consider (each layer gets those dividing its D; K = 16, and 32/64 on VBMI targets)")
    opt.add_argument("--only", nargs="+", metavar="LAYER", help="consider only these layers")
    opt.add_argument("--batch", type=int, default=None, help="batch to import an ONNX model with dynamic batch at")
    opt.add_argument("--repeat", type=int, default=5, help="timing repeats per kernel (median; default 5)")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--prune", action="store_true",
                     help="skip a candidate whose loss alone already exceeds the budget left (fewer whole-model "
                     "checks: for models whose evaluation is slow)")
    opt.add_argument("--refit", choices=REFITS, default=DEFAULT_REFIT,
                     help="ridge (default): train the LUT tables on the calibration data (ridge regression to "
                     "the original layers' outputs, layer by layer with compounding) and spend the budget this "
                     "frees on more LUT layers; none: k-means tables only")
    opt.add_argument("--no-int8", action="store_true",
                     help="do not offer dense (Linear) layers as int8 matmuls (run-time quantized activations, "
                     "int8 weights): only LUTs or fp32 dense")
    opt.add_argument("--verify-fraction", type=float, default=DEFAULT_VERIFY_FRACTION, metavar="F",
                     help="share of the evaluation data held back from the search; the final plan is checked "
                     f"on it and backed off until it holds the budget there (default {DEFAULT_VERIFY_FRACTION}; "
                     "0: none)")
    opt.add_argument("--no-peers", action="store_true",
                     help="do not time the original model in PyTorch and ONNX Runtime for the report")
    opt.set_defaults(func=cmd_optimize)
