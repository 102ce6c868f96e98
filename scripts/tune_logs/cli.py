"""``python -m scripts.tune_logs``: arguments, the run from case selection to the report."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from .cases import GROUPS, select_cases
from .sessions import Deadline, extract_rows, plan_sessions, tune_sessions
from .state import REPORT_FILE, STATE_FILE, TunedState, prune_in_place, render_report

# Per task: 2 cores shared with other jobs, about 35 minutes for every case (see DEFAULT_TRIALS_NOTE).
DEFAULT_TRIALS = 8
DEFAULT_TRIALS_NOTE = "fits the ~35-minute budget on 2 cores (tuning_logs/README.md, Shipped logs)"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m scripts.tune_logs", description=sys.modules[__package__].__doc__.splitlines()[0])
    parser.add_argument("--target", default="x86-avx512", help="lut_tvm target name (default: x86-avx512)")
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                        help=f"measurements per task (default {DEFAULT_TRIALS}: {DEFAULT_TRIALS_NOTE})")
    parser.add_argument("--only", choices=GROUPS, help="tune one group of cases only")
    parser.add_argument("--cases", nargs="+", metavar="SUBSTR",
                        help="only the cases whose name ('<folder>/dense', '<folder>/LUT V=9') contains one "
                             "of these (e.g. /LUT: every LUT model); the part before a '/' selects the "
                             "folders to prepare")
    parser.add_argument("--log-dir", type=Path, help="tuning log root (default: the repository's tuning_logs/, "
                        "or $LUT_TVM_TUNING_LOGS)")
    parser.add_argument("--work", type=Path, help="the speed benchmark's case folders: reuse complete ones, "
                        "build missing ones here (default: a temporary folder)")
    parser.add_argument("--max-minutes", type=float,
                        help="stop like Ctrl-C once this much wall time has passed (records kept, report written)")
    parser.add_argument("--prune", action="store_true",
                        help="at the end keep each workload's best record only (what is shipped); "
                             "TUNED.json still says what was tuned, so a later run continues")
    parser.add_argument("--dry-run", action="store_true",
                        help="list every case's tasks and which are new, tune nothing, write nothing")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be >= 1")
    if args.max_minutes is not None and args.max_minutes <= 0:
        parser.error("--max-minutes must be > 0")
    return args



def print_dry_run(rows: dict, sessions: list) -> None:
    print(f"{'case':<58}{'tasks':>6}{'new':>6}")
    for name, row in rows.items():
        print(f"{name[:57]:<58}{len(row['tasks']):>6}{len(row['new']):>6}")
    print(f"{sum(len(r['new']) for r in rows.values())} distinct tasks to tune in {len(rows)} cases "
          f"({sum(len(r['tasks']) for r in rows.values())} task uses); {len(sessions)} tuning sessions: "
          + ", ".join(f"{len(cases)} cases" if len(cases) > 1 else cases[0].name for cases in sessions))



def main(argv=None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    import warnings  # pylint: disable=import-outside-toplevel

    from lut_tvm.steps import Progress  # pylint: disable=import-outside-toplevel
    from lut_tvm.targets import resolve_target  # pylint: disable=import-outside-toplevel
    from lut_tvm.tuning import keys  # pylint: disable=import-outside-toplevel

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.log_dir = args.log_dir or keys.default_log_dir()
    tvm_target = resolve_target(args.target)
    log_path = keys.log_path(args.log_dir, tvm_target)
    state = TunedState(log_path.parent / STATE_FILE, log_path.name)
    start, load_start, deadline = time.time(), round(os.getloadavg()[0], 2), Deadline(args.max_minutes)
    progress = Progress()
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="tune_logs_") as tmp:
        try:
            cases = select_cases(args, args.work or Path(tmp), progress)
            rows, owner = extract_rows(cases, tvm_target, state, progress)
            sessions = plan_sessions([case for case in cases if case.name in rows], rows)
            if args.dry_run:
                print_dry_run(rows, sessions)
                return 0
            interrupted = tune_sessions(sessions, args, tvm_target, state, rows, owner, progress, deadline)
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        print("interrupted: every record measured so far is kept", file=sys.stderr)
    command = " ".join(["python -m scripts.tune_logs", *(argv if argv is not None else sys.argv[1:])])
    state.runs.append({"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command, "trials": args.trials,
                       "wall_s": round(time.time() - start, 1), "load_start": load_start,
                       "load_end": round(os.getloadavg()[0], 2), "interrupted": interrupted})
    state.save()
    if args.prune and (log_path / keys.RECORD_FILE).is_file():
        print(f"pruned {log_path} to {prune_in_place(log_path)} records (the best per workload)")
    report = render_report(state, keys.device_name(tvm_target), log_path)
    from lut_tvm.files import write_text_atomic  # pylint: disable=import-outside-toplevel

    write_text_atomic(log_path.parent / REPORT_FILE, report)
    print(report)
    print(f"wrote {log_path.parent / REPORT_FILE} and {state.path}; records in {log_path}")
    return 130 if interrupted else 0
