"""The remote-device options shared by ``lut-tvm run`` and ``lut-tvm bench``."""

from __future__ import annotations

from .defaults import DEFAULT_CONNECT_TIMEOUT, DEFAULT_RUN_TIMEOUT


def add_remote_arguments(parser, run_timeout: float = DEFAULT_RUN_TIMEOUT,
                         run_help: str = "each upload/run step") -> None:
    """--rpc / --tracker / --key and the timeouts."""
    group = parser.add_argument_group("remote device (TVM RPC)")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--rpc", metavar="HOST:PORT",
                       help="run on the device behind this RPC server (host defaults to 127.0.0.1)")
    where.add_argument("--tracker", metavar="HOST:PORT", help="ask this RPC tracker for a device")
    group.add_argument("--key", help="device key for --tracker (as the server registered it)")
    group.add_argument("--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT,
                       metavar="SECONDS",
                       help=f"give up connecting after this (default {DEFAULT_CONNECT_TIMEOUT:g})")
    group.add_argument("--run-timeout", type=float, default=run_timeout, metavar="SECONDS",
                       help=f"give up on {run_help} after this (default {run_timeout:g})")


def is_remote(args) -> bool:
    return bool(getattr(args, "rpc", None) or getattr(args, "tracker", None))


def open_session(args):
    """A RemoteSession from the parsed options."""
    from .session import connect  # pylint: disable=import-outside-toplevel

    return connect(args.rpc, tracker=args.tracker, key=args.key,
                   connect_timeout=args.connect_timeout, run_timeout=args.run_timeout)
