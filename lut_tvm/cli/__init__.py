"""The ``lut-tvm`` command line: parses arguments and calls the Python API; one module per command.

Building the parser and checking the arguments imports neither TVM nor torch (each command
imports what it needs when it runs), so a wrong argument or a missing file is reported at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from pathlib import Path

from ..errors import LutTvmError

# Subcommand modules of this package, in the order ``--help`` lists them.
COMMANDS = ("plan", "quantize", "compile", "tune", "optimize", "run", "bench", "device", "demo")
# Commands whose module may be absent from this installation: skipped when it is.
OPTIONAL_COMMANDS = frozenset({"optimize"})
# Arguments (by ``dest``) that name files the command reads, and what each is called in the
# error when the file does not exist.
INPUT_FILES = {
    "model": "model file",
    "plan": "plan file",
    "example": "example input file",
    "calibration": "calibration file",
    "artifact": "compiled model",
    "inputs": "input file",
}
INTERRUPTED = 130  # exit status after Ctrl-C (128 + SIGINT), as shells report it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lut-tvm",
        description="Compile neural networks to run by table lookup (LUT-NN) on Apache TVM.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and show tracebacks")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for TVM and PyTorch (default: all cores)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name in COMMANDS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as err:
            if name in OPTIONAL_COMMANDS and err.name == f"{__name__}.{name}":
                continue
            raise
        module.register(sub)
    return parser


def check_input_files(args) -> None:
    """A LutTvmError naming the first input file of ``args`` (``INPUT_FILES``) that does not exist."""
    for dest, what in INPUT_FILES.items():
        value = getattr(args, dest, None)
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, str) and path and not Path(path).exists():
                raise LutTvmError(f"{what} {path!r} does not exist")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        check_input_files(args)
        if args.threads:
            from .. import _tvm_compat  # pylint: disable=import-outside-toplevel

            _tvm_compat.set_num_threads(args.threads)
        return args.func(args) or 0
    except (LutTvmError, argparse.ArgumentTypeError) as err:
        if args.verbose:
            raise
        print(f"lut-tvm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.verbose:
            raise
        print(f"lut-tvm {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
