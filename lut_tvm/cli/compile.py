"""lut-tvm compile: a model (+ plan) to a shared library and its description."""

from __future__ import annotations

from .common import MODEL_HELP, load_array


def cmd_compile(args) -> None:
    from ..compiler import compile as compile_model  # pylint: disable=import-outside-toplevel

    example = (load_array(args.example, "example input"),) if args.example else None
    compiled = compile_model(args.model, args.plan, target=args.target, example_inputs=example,
                             dump_ir=args.dump_ir, tuning_logs=args.tuning_logs or True,
                             fast_math=not args.no_fast_math)
    written = compiled.export(args.output)
    print(f"wrote {written} (target {compiled.info.target}; LUT layers: "
          f"{', '.join(compiled.info.lut_layers) or 'none'})")
    print(f"tuning log: {compiled.info.tuning_log or 'none (default schedule rules)'}")
    if compiled.export_message:
        print(compiled.export_message)


def register(sub) -> None:
    """Add the subcommand to the subparsers ``sub``."""
    comp = sub.add_parser("compile", help="compile a model (+ plan) to a shared library",
                          description="Compile a model; the plan's layers run as LUTs, the rest "
                          "as scheduled dense TVM code. Writes OUTPUT and OUTPUT.json.")
    comp.add_argument("model", help=MODEL_HELP)
    comp.add_argument("--plan", help="LUT plan (.npz) from `lut-tvm plan`, or an exact (LUT-NA) "
                      "plan: the kind is read from the file's metadata; omit for all-dense")
    comp.add_argument("--target", default="native",
                      help="native, x86-avx2, x86-avx512 or arm64 (default: native)")
    comp.add_argument("--example", help=".npy input fixing the shapes of an ONNX model's dynamic dims")
    comp.add_argument("-o", "--output", default="model.so", help="library to write (default: model.so)")
    comp.add_argument("--tuning-logs", metavar="DIR",
                      help="tuning log root to apply from (default: tuning_logs/ or $LUT_TVM_TUNING_LOGS)")
    comp.add_argument("--no-fast-math", action="store_true",
                      help="compute GELU, softmax, exp, erf and tanh with libm (scalar, slower) "
                      "instead of TVM's vectorizable approximations")
    comp.add_argument("--dump-ir", metavar="DIR", help="write the IR after each stage to DIR")
    comp.set_defaults(func=cmd_compile)
