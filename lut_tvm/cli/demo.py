"""lut-tvm demo: the bundled digits CNN job."""

from __future__ import annotations

from pathlib import Path


def cmd_demo(args) -> None:
    from ..steps import Progress  # pylint: disable=import-outside-toplevel

    with Progress().step("loading TVM, PyTorch and scikit-learn"):
        from ..demo import run_demo  # pylint: disable=import-outside-toplevel

    run_demo(out_dir=Path(args.out_dir), threads=args.threads, seed=args.seed)


def register(sub) -> None:
    """Add the subcommand to the subparsers ``sub``."""
    demo = sub.add_parser("demo", help="train a digits CNN, plan, compile, compare accuracy and speed",
                          description="Trains a small CNN on scikit-learn's digits (seeded), builds "
                          "a k-means plan, compiles dense and LUT versions, and prints accuracy "
                          "and latency against PyTorch.")
    demo.add_argument("--out-dir", default="demo_out", help="where the model, plan and library go")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)
