"""The ``lut-tvm`` command line: parses arguments and calls the Python API; help text lives here."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from .errors import ArtifactError, LutTvmError, ModelLoadError

MODEL_HELP = "model file: .onnx, or a torch.export .pt2 (torch.export.save)"


def _load_array(path: str, what: str, key: str | None = None) -> np.ndarray:
    """An array from a .npy, or from a .npz (``key`` or its only/first array)."""
    file = Path(path)
    if not file.is_file():
        raise ModelLoadError(f"{what} file {path!r} does not exist")
    try:
        data = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ModelLoadError(f"{what} file {path!r} is not a .npy/.npz array: {err}") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            names = data.files
            if key is not None and key not in names:
                raise ModelLoadError(f"{what} file {path!r} has no array {key!r} (has {names})")
            return data[key or names[0]]
    return data


def _parse_overrides(pairs: list[str]) -> dict[str, int]:
    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not value.isdigit():
            raise argparse.ArgumentTypeError(f"--sub-len expects LAYER=V, got {pair!r}")
        overrides[name] = int(value)
    return overrides


def cmd_plan(args) -> None:
    from .planner import PlanPolicy, build_kmeans_plan  # pylint: disable=import-outside-toplevel

    calibration = _load_array(args.calibration, "calibration", args.calibration_key)
    policy = PlanPolicy(
        num_centroids=args.centroids,
        dense_sub_len=args.dense_sub_len,
        conv_sub_len=args.conv_sub_len,
        conv1x1_sub_len=args.conv1x1_sub_len,
        skip_first_conv=not args.keep_first_conv,
        skip_last_dense=not args.keep_last_dense,
        sub_len_overrides=_parse_overrides(args.sub_len),
        only=args.only,
        exclude=args.exclude or [],
        max_rows=args.max_rows,
        seed=args.seed,
    )
    example = (calibration[: args.batch],) if args.batch else None
    plan = build_kmeans_plan(args.model, calibration, policy, example_inputs=example)
    plan.save(args.output)
    for layer in plan.layers:
        print(f"  {layer.name:<24} {layer.kind.value:<6} weight {list(layer.weight_shape)}  "
              f"C={layer.num_codebooks} K={layer.num_centroids} V={layer.sub_vector_len}")
    print(f"wrote {args.output} ({len(plan.layers)} LUT layers)")


def cmd_compile(args) -> None:
    from .compiler import compile as compile_model  # pylint: disable=import-outside-toplevel

    example = (_load_array(args.example, "example input"),) if args.example else None
    compiled = compile_model(args.model, args.plan, target=args.target, example_inputs=example,
                             dump_ir=args.dump_ir)
    compiled.export(args.output)
    print(f"wrote {args.output} (target {compiled.info.target}; LUT layers: "
          f"{', '.join(compiled.info.lut_layers) or 'none'})")


def cmd_run(args) -> None:
    from .runtime import load  # pylint: disable=import-outside-toplevel

    compiled = load(args.artifact)
    inputs = [_load_array(path, "input") for path in args.inputs]
    info = compiled.info
    if len(inputs) == len(info.input_names):  # a count mismatch is reported by the model
        for path, name, shape, array in zip(args.inputs, info.input_names, info.input_shapes, inputs):
            if list(array.shape) != list(shape):
                raise ArtifactError(f"input file {path!r} has shape {list(array.shape)}, but "
                                    f"{args.artifact!r} takes input {name!r} of shape {list(shape)}")
    outputs = compiled(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    # np.save/np.savez append .npy/.npz to a name without it: report the file really written
    suffix = ".npy" if len(outputs) == 1 else ".npz"
    out = Path(args.output)
    if out.suffix != suffix:
        out = out.with_name(out.name + suffix)
    out.parent.mkdir(parents=True, exist_ok=True)
    if len(outputs) == 1:
        np.save(out, outputs[0])
    else:
        np.savez(out, *outputs)
    print(f"wrote {out}: " + ", ".join(f"{list(o.shape)} {o.dtype}" for o in outputs))
    if args.time:
        print(f"median latency: {compiled.benchmark(*inputs) * 1e3:.3f} ms "
              f"({os.environ.get('TVM_NUM_THREADS', os.cpu_count())} threads)")


def cmd_demo(args) -> None:
    from .demo import run_demo  # pylint: disable=import-outside-toplevel

    run_demo(out_dir=Path(args.out_dir), threads=args.threads, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lut-tvm",
        description="Compile neural networks to run by table lookup (LUT-NN) on Apache TVM.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and show tracebacks")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for TVM and PyTorch (default: all cores)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    plan.set_defaults(func=cmd_plan)

    comp = sub.add_parser("compile", help="compile a model (+ plan) to a shared library",
                          description="Compile a model; the plan's layers run as LUTs, the rest "
                          "as scheduled dense TVM code. Writes OUTPUT and OUTPUT.json.")
    comp.add_argument("model", help=MODEL_HELP)
    comp.add_argument("--plan", help="LUT plan (.npz) from `lut-tvm plan`; omit for all-dense")
    comp.add_argument("--target", default="native",
                      help="native, x86-avx2, x86-avx512 or arm64 (default: native)")
    comp.add_argument("--example", help=".npy input fixing the shapes of an ONNX model's dynamic dims")
    comp.add_argument("-o", "--output", default="model.so", help="library to write (default: model.so)")
    comp.add_argument("--dump-ir", metavar="DIR", help="write the IR after each stage to DIR")
    comp.set_defaults(func=cmd_compile)

    run = sub.add_parser("run", help="run a compiled model on .npy inputs",
                         description="Load a compiled model and run it on one .npy per input.")
    run.add_argument("artifact", help="library written by `lut-tvm compile`")
    run.add_argument("inputs", nargs="+", help="one .npy per model input")
    run.add_argument("-o", "--output", default="output.npy", help="where to write the output(s)")
    run.add_argument("--time", action="store_true", help="also report the median latency")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="train a digits CNN, plan, compile, compare accuracy and speed",
                          description="Trains a small CNN on scikit-learn's digits (seeded), builds "
                          "a k-means plan, compiles dense and LUT versions, and prints accuracy "
                          "and latency against PyTorch.")
    demo.add_argument("--out-dir", default="demo_out", help="where the model, plan and library go")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    if args.threads:
        from . import _tvm_compat  # pylint: disable=import-outside-toplevel

        _tvm_compat.set_num_threads(args.threads)
    try:
        args.func(args)
    except (LutTvmError, argparse.ArgumentTypeError) as err:
        if args.verbose:
            raise
        print(f"lut-tvm {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
