"""lut-tvm tune: MetaSchedule tuning of a model's tasks into the per-device tuning log."""

from __future__ import annotations

from .common import MODEL_HELP, load_array


def cmd_tune(args) -> None:
    from ..tuning.tune import format_summary, tune_model  # pylint: disable=import-outside-toplevel

    example = (load_array(args.example, "example input"),) if args.example else None
    # Ctrl-C stops after the batch in flight, a second one or SIGTERM at once: either way the
    # records measured so far are kept and the worker processes are stopped.
    result = tune_model(args.model, args.plan, target=args.target, trials=args.trials,
                        log_dir=args.log_dir, example_inputs=example, seed=args.seed,
                        task_filter=args.tasks)
    if result.tasks:
        print(format_summary(result))
    state = "interrupted; kept" if result.interrupted else "wrote"
    print(f"{state} {result.records} records in {result.log_dir} "
          f"(`lut-tvm compile --target {args.target}` applies them"
          + ("" if args.log_dir is None else " when given this log dir") + ")")


def register(sub) -> None:
    """Add the subcommand to the subparsers ``sub``."""
    tune = sub.add_parser(
        "tune", help="tune the model's kernels with MetaSchedule into a tuning log",
        description="Tune every task of a model (LUT kernels and the remaining dense ops) with "
        "MetaSchedule and the XGBoost cost model. Records go to LOG_DIR/<device>/<key>/ as they "
        "are measured; Ctrl-C keeps them. `compile` applies the log matching its target.")
    tune.add_argument("model", help=MODEL_HELP)
    tune.add_argument("--plan", help="LUT plan (.npz) from `lut-tvm plan`; omit for all-dense")
    tune.add_argument("--target", default="native",
                      help="native, x86-avx2, x86-avx512 or arm64 (default: native)")
    tune.add_argument("--trials", type=int, default=32,
                      help="measurements per task (default: 32)")
    tune.add_argument("--log-dir", default=None,
                      help="tuning log root (default: tuning_logs/ of the lut_tvm checkout, "
                      "or $LUT_TVM_TUNING_LOGS)")
    tune.add_argument("--example", help=".npy input fixing the shapes of an ONNX model's dynamic dims")
    tune.add_argument("--tasks", nargs="+", metavar="NAME",
                      help="tune only the tasks whose name contains one of these (e.g. lut_lookup)")
    tune.add_argument("--seed", type=int, default=0, help="search seed (default: 0)")
    tune.set_defaults(func=cmd_tune)
