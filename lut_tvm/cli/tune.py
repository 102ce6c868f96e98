"""lut-tvm tune: MetaSchedule tuning of a model's tasks into the per-device tuning log."""

from __future__ import annotations

from ..deploy.cli_options import add_remote_arguments, is_remote
from ..deploy.defaults import DEFAULT_MEASURE_TIMEOUT
from . import INTERRUPTED
from .common import MODEL_HELP, load_array


def _remote_device(args):
    """The RemoteDevice of --rpc / --tracker --key, or None (measure on this machine)."""
    if not is_remote(args):
        return None
    from ..tuning.remote import RemoteDevice  # pylint: disable=import-outside-toplevel

    return RemoteDevice(rpc=args.rpc, tracker=args.tracker, key=args.key,
                        connect_timeout=args.connect_timeout, run_timeout=args.run_timeout)


def cmd_tune(args) -> int:
    from ..steps import Progress  # pylint: disable=import-outside-toplevel

    with Progress().step("loading TVM"):
        from ..tuning.tune import format_summary, tune_model  # pylint: disable=import-outside-toplevel

    example = (load_array(args.example, "example input"),) if args.example else None
    # Ctrl-C (or SIGTERM) stops within seconds: the records measured so far stay in the log, the
    # worker processes are killed, the exit status is 130.
    result = tune_model(args.model, args.plan, target=args.target, trials=args.trials,
                        log_dir=args.log_dir, example_inputs=example, seed=args.seed,
                        task_filter=args.tasks, remote=_remote_device(args),
                        fast_math=not args.no_fast_math)
    if result.tasks:
        print(format_summary(result))
    state = "interrupted; kept" if result.interrupted else "wrote"
    apply = f"lut-tvm compile --target {args.target}"
    if args.log_dir is not None:
        apply += f" --tuning-logs {args.log_dir}"
    if args.no_fast_math:
        apply += " --no-fast-math"
    print(f"{state} {result.records} records in {result.log_dir} (`{apply}` applies them)")
    return INTERRUPTED if result.interrupted else 0


def register(sub) -> None:
    """Add the subcommand to the subparsers ``sub``."""
    tune = sub.add_parser(
        "tune", help="tune the model's kernels with MetaSchedule into a tuning log",
        description="Tune every task of a model (LUT kernels and the remaining dense ops) with "
        "MetaSchedule and the XGBoost cost model. Records go to LOG_DIR/<device>/<key>/ as they "
        "are measured. Ctrl-C stops within seconds, keeps them and exits with status 130. "
        "`compile` applies the log matching its target: from the default LOG_DIR without being "
        "told, ahead of the logs shipped with lut_tvm. "
        "For a target this machine cannot run (arm64), candidates are built here and timed on "
        "the device over TVM RPC: --tracker HOST:PORT --key KEY, or --rpc HOST:PORT.")
    tune.add_argument("model", help=MODEL_HELP)
    tune.add_argument("--plan", help="LUT plan (.npz) from `lut-tvm plan`, or an exact (LUT-NA) plan; omit for all-dense")
    tune.add_argument("--target", default="native",
                      help="native, x86-avx2, x86-avx512 or arm64 (default: native)")
    tune.add_argument("--trials", type=int, default=32,
                      help="measurements per task (default: 32)")
    tune.add_argument("--log-dir", default=None,
                      help="tuning log root to write to (default: $LUT_TVM_TUNING_LOGS, else "
                      "$XDG_CACHE_HOME/lut_tvm/tuning_logs, i.e. ~/.cache/lut_tvm/tuning_logs; "
                      "never the logs shipped with lut_tvm)")
    tune.add_argument("--example", help=".npy input fixing the shapes of an ONNX model's dynamic dims")
    tune.add_argument("--tasks", nargs="+", metavar="NAME",
                      help="tune only the tasks whose name contains one of these (e.g. lut_lookup)")
    tune.add_argument("--seed", type=int, default=0, help="search seed (default: 0)")
    tune.add_argument("--no-fast-math", action="store_true",
                      help="tune the model as `compile --no-fast-math` builds it (libm GELU, softmax, "
                      "exp, erf, tanh: other tasks than the default fast forms)")
    add_remote_arguments(tune, run_timeout=DEFAULT_MEASURE_TIMEOUT,
                         run_help="each step of one measurement (upload, load, copy, time)")
    tune.set_defaults(func=cmd_tune)
