"""lut-tvm compile: a model (+ plan) to a shared library and its description."""

from __future__ import annotations

from pathlib import Path

from .common import (
    MODEL_HELP,
    add_quiet_argument,
    check_paths,
    load_array,
    progress_printer,
)

TARGET_HELP = ("native, x86-avx2, x86-avx512, arm64, android-arm64, or a TVM target dict as JSON, "
               "e.g. '{\"kind\": \"llvm\", \"mcpu\": \"znver4\"}' (default: native)")


def cmd_compile(args) -> None:
    output = Path(args.output)
    check_paths({"model": args.model, "plan": args.plan, "example input": args.example},
                {"output": output, "output description": output.with_name(output.name + ".json")},
                folders={"tuning log": args.tuning_logs})
    example = (load_array(args.example, "example input"),) if args.example else None
    say = progress_printer(args)
    if say:
        say("loading TVM and PyTorch ...")
    from ..compiler import compile as compile_model  # pylint: disable=import-outside-toplevel
    from ..targets import describe_target  # pylint: disable=import-outside-toplevel

    compiled = compile_model(args.model, args.plan, target=args.target, example_inputs=example,
                             dump_ir=args.dump_ir, tuning_logs=args.tuning_logs or True,
                             fast_math=not args.no_fast_math, progress=say)
    if say:
        say(f"writing {output}")
    compiled.export(output)
    print(compiled.export_message)
    print(f"target: {describe_target(compiled.info.target)}; LUT layers: "
          f"{', '.join(compiled.info.lut_layers) or 'none'}")
    print(f"tuning log: {_tuning_summary(compiled.tuning)}")


def _tuning_summary(applied) -> str:
    if applied is None:
        return "none (default schedule rules)"
    if applied.applied == 0:
        return (f"no tuned record matched (0 of {applied.total} functions) in {applied.path}; "
                "default schedule rules")
    return f"{applied.path} ({applied.applied} of {applied.total} functions tuned)"


def register(sub) -> None:
    """Add the subcommand to the subparsers ``sub``."""
    comp = sub.add_parser("compile", help="compile a model (+ plan) to a shared library",
                          description="Compile a model; the plan's layers run as LUTs, the rest "
                          "as scheduled dense TVM code. Writes OUTPUT and OUTPUT.json.")
    comp.add_argument("model", help=MODEL_HELP)
    comp.add_argument("--plan", help="LUT plan (.npz) from `lut-tvm plan`, or an exact (LUT-NA) "
                      "plan: the kind is read from the file's metadata; omit for all-dense")
    comp.add_argument("--target", default="native", help=TARGET_HELP)
    comp.add_argument("--example", help=".npy input fixing the shapes of an ONNX model's dynamic dims")
    comp.add_argument("-o", "--output", default="model.so", help="library to write (default: model.so)")
    comp.add_argument("--tuning-logs", metavar="DIR",
                      help="tuning log root to apply from (default: the user's logs, $LUT_TVM_TUNING_LOGS or "
                      "~/.cache/lut_tvm/tuning_logs, then the shipped tuning_logs/)")
    comp.add_argument("--no-fast-math", action="store_true",
                      help="compute GELU, softmax, exp, erf and tanh with libm (scalar, slower) "
                      "instead of TVM's vectorizable approximations")
    comp.add_argument("--dump-ir", metavar="DIR", help="write the IR after each stage to DIR")
    add_quiet_argument(comp)
    comp.set_defaults(func=cmd_compile)
