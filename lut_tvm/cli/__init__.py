"""The ``lut-tvm`` command line: parses arguments and calls the Python API; one module per command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from ..errors import LutTvmError

# Subcommand modules of this package, in the order ``--help`` lists them.
COMMANDS = ("plan", "optimize", "compile", "tune", "run", "bench", "device", "demo")


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
        importlib.import_module(f".{name}", __name__).register(sub)
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
        from .. import _tvm_compat  # pylint: disable=import-outside-toplevel

        _tvm_compat.set_num_threads(args.threads)
    try:
        args.func(args)
    except (LutTvmError, argparse.ArgumentTypeError) as err:
        if args.verbose:
            raise
        print(f"lut-tvm {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0
