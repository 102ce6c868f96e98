"""lut-tvm quantize: an exact (LUT-NA) plan from a model file and calibration samples."""

from __future__ import annotations

import argparse

from ..errors import PlanError
from ..exact.reference import MAX_BITS, MIN_BITS
from .common import MODEL_HELP, add_quiet_argument, check_paths, load_array, parse_overrides, progress_printer


def cmd_quantize(args) -> None:
    check_paths({"model": args.model, "calibration": args.calibration}, {"plan": args.output})
    overrides = parse_overrides(args.layer_bits, "--layer-bits", "B")
    for bits in [args.bits, *overrides.values()]:
        if not MIN_BITS <= bits <= MAX_BITS:
            raise argparse.ArgumentTypeError(f"weight bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")
    calibration = load_array(args.calibration, "calibration", args.calibration_key)
    say = progress_printer(args)
    if say:
        say("loading TVM and PyTorch ...")
    from ..exact.quantize import build_plan, calibrate_layers  # pylint: disable=import-outside-toplevel
    example = (calibration[: args.batch],) if args.batch else None
    if say:
        say(f"running {len(calibration)} calibration samples through {args.model}")
    layers = calibrate_layers(args.model, calibration, method=args.method, example_inputs=example)
    bits = {layer.name: overrides.get(layer.name, args.bits) for layer in layers}
    unknown = sorted(set(overrides) - set(bits))
    if unknown:
        raise PlanError(f"--layer-bits names layer(s) {unknown} that {args.model} does not have; "
                        f"its layers are {sorted(bits)}")
    plan = build_plan(layers, bits, {"method": "ptq", "calibration": args.method,
                                     "samples": int(len(calibration)), "model": args.model})
    plan.save(args.output)
    for layer in plan.layers:
        print(f"  {layer.name:<24} {layer.kind.value:<6} weight {list(layer.weight_shape)}  "
              f"{layer.bits}-bit weights, input scale {float(layer.act_scale):.4g}")
    example = " --example X.npy" if args.batch else ""  # the dynamic batch needs fixing again
    print(f"wrote {args.output} ({len(plan.layers)} exact LUT layers); compile it with "
          f"`lut-tvm compile {args.model} --plan {args.output}{example}`")


def register(sub) -> None:
    """Add the subcommand to the subparsers ``sub``."""
    quantize = sub.add_parser("quantize", help="build an exact (LUT-NA) plan: int8 inputs, b-bit weights",
                              description="Run calibration samples through the model, calibrate each "
                              "dense/conv2d layer's int8 input scale, quantize its weight per output "
                              "channel to b bits, and write an exact plan (.npz) for `lut-tvm compile`.")
    quantize.add_argument("model", help=MODEL_HELP)
    quantize.add_argument("--calibration", required=True,
                          help=".npy/.npz of input samples stacked on axis 0 (a few hundred are enough)")
    quantize.add_argument("--calibration-key", help="array name inside a .npz calibration file")
    quantize.add_argument("-o", "--output", default="exact_plan.npz",
                          help="plan file to write (default: exact_plan.npz)")
    quantize.add_argument("--bits", type=int, default=MAX_BITS,
                          help=f"weight bits b of every layer, {MIN_BITS}..{MAX_BITS} (default {MAX_BITS})")
    quantize.add_argument("--layer-bits", action="append", default=[], metavar="LAYER=B",
                          help="weight bits of one layer by name (repeatable)")
    quantize.add_argument("--method", choices=("max", "percentile"), default="max",
                          help="input scale calibration: max|x| (default) or the 99.99th percentile")
    quantize.add_argument("--batch", type=int, default=None,
                          help="batch to import an ONNX model with dynamic batch at")
    add_quiet_argument(quantize)
    quantize.set_defaults(func=cmd_quantize)
