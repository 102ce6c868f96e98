"""lut-tvm plan: a k-means LUT plan from a model and calibration samples."""

from __future__ import annotations

import importlib

from .common import (
    MODEL_HELP,
    add_quiet_argument,
    check_paths,
    load_array,
    parse_overrides,
    progress_printer,
)

# a layer losing more of its output than this to the codebooks is worth training (lut_tvm.train)
LARGE_ERROR = 0.3


def cmd_plan(args) -> None:
    check_paths({"model": args.model, "calibration": args.calibration}, {"plan": args.output})
    overrides = parse_overrides(args.sub_len)
    calibration = load_array(args.calibration, "calibration", args.calibration_key)
    say = progress_printer(args)
    if say:
        say("loading TVM and PyTorch ...")
    from ..planner import PlanPolicy, build_kmeans_plan  # pylint: disable=import-outside-toplevel

    policy = PlanPolicy(
        num_centroids=args.centroids,
        dense_sub_len=args.dense_sub_len,
        conv_sub_len=args.conv_sub_len,
        conv1x1_sub_len=args.conv1x1_sub_len,
        skip_first_conv=not args.keep_first_conv,
        skip_last_dense=not args.keep_last_dense,
        sub_len_overrides=overrides,
        only=args.only,
        exclude=args.exclude or [],
        max_rows=args.max_rows,
        seed=args.seed,
        encode=args.encode,
    )
    example = (calibration[: args.batch],) if args.batch else None
    plan = build_kmeans_plan(args.model, calibration, policy, example_inputs=example, progress=say)
    plan.save(args.output)
    errors = plan.provenance.get("reconstruction_error", {})
    for layer in plan.layers:
        print(f"  {layer.name:<24} {layer.kind.value:<6} weight {list(layer.weight_shape)}  "
              f"C={layer.num_codebooks} K={layer.num_centroids} V={layer.sub_vector_len} encode {layer.encode.value}  "
              f"output error {errors[layer.name]:.3f}")
    if plan.layers:
        print("  (output error: relative error of the layer's output on the calibration data)")
    print(f"wrote {args.output} ({len(plan.layers)} LUT layers)")
    large = [name for name, error in errors.items() if error > LARGE_ERROR]
    if large:
        print(f"layer(s) {', '.join(large)} lose more than {LARGE_ERROR:.0%} of their output to k-means "
              f"centroids: learn the centroids with lut_tvm.train{_optimize_hint()} "
              "(README: 'Learning the centroids'), or raise K / lower V for them")


def _optimize_hint() -> str:
    """`` or `lut-tvm optimize` `` when this lut-tvm has that command."""
    commands = importlib.import_module("lut_tvm.cli").COMMANDS
    return " or `lut-tvm optimize`" if "optimize" in commands else ""


def register(sub) -> None:
    """Add the subcommand to the subparsers ``sub``."""
    plan = sub.add_parser("plan", help="build a k-means LUT plan from calibration data",
                          description="Run calibration samples through the model, k-means each "
                          "planned layer's inputs per codebook, and write a plan (.npz).")
    plan.add_argument("model", help=MODEL_HELP)
    plan.add_argument("--calibration", required=True,
                      help=".npy/.npz of input samples stacked on axis 0 (about 1024 is plenty)")
    plan.add_argument("--calibration-key", help="array name inside a .npz calibration file")
    plan.add_argument("-o", "--output", default="plan.npz", help="plan file to write (default: plan.npz)")
    plan.add_argument("--centroids", "-K", type=int, default=16, help="centroids per codebook K (default 16)")
    plan.add_argument("--dense-sub-len", type=int, default=16, help="V for dense layers (default 16)")
    plan.add_argument("--conv-sub-len", type=int, default=None,
                      help="V for kxk convs (default kh*kw: one input channel's window)")
    plan.add_argument("--conv1x1-sub-len", type=int, default=4, help="V for 1x1 convs (default 4)")
    plan.add_argument("--sub-len", action="append", default=[], metavar="LAYER=V",
                      help="V for one layer by name (repeatable)")
    plan.add_argument("--only", nargs="+", metavar="LAYER", help="plan only these layers")
    plan.add_argument("--exclude", nargs="+", metavar="LAYER", help="never plan these layers")
    plan.add_argument("--keep-first-conv", action="store_true", help="also plan the first conv")
    plan.add_argument("--keep-last-dense", action="store_true", help="also plan the last dense layer")
    plan.add_argument("--max-rows", type=int, default=4096, help="input rows per layer for k-means")
    plan.add_argument("--batch", type=int, default=None,
                      help="batch to import an ONNX model with dynamic batch at")
    plan.add_argument("--seed", type=int, default=0)
    plan.add_argument("--encode", choices=("float", "int8"), default="float",
                      help="how the dense LUT layers compute their codes: float32 distances (default) or "
                      "integer distances on int8-quantized inputs and centroids (convs keep float)")
    add_quiet_argument(plan)
    plan.set_defaults(func=cmd_plan)
