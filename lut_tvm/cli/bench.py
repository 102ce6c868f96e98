"""lut-tvm bench: the latency of a compiled model from TVM's time evaluator (median of repeats),
on this machine or on a remote device (--rpc HOST:PORT / --tracker HOST:PORT --key KEY)."""

from __future__ import annotations

import os

import numpy as np

from ..deploy.cli_options import add_remote_arguments, is_remote, open_session
from ..errors import ArtifactError
from .common import check_paths, load_array


def _inputs(args, info) -> list[np.ndarray]:
    if not args.inputs:  # latency does not depend on the values: seeded uniform [0, 1)
        rng = np.random.default_rng(0)
        return [rng.random(shape, dtype=np.float32) for shape in info.input_shapes]
    inputs = [load_array(path, "input") for path in args.inputs]
    if len(inputs) != len(info.input_names):
        raise ArtifactError(f"{args.artifact!r} takes {len(info.input_names)} input(s) "
                            f"{info.input_names}, got {len(inputs)} file(s)")
    for path, name, shape, array in zip(args.inputs, info.input_names, info.input_shapes, inputs):
        if list(array.shape) != list(shape):
            raise ArtifactError(f"input file {path!r} has shape {list(array.shape)}, but "
                                f"{args.artifact!r} takes input {name!r} of shape {list(shape)}")
    return inputs


def cmd_bench(args) -> None:
    check_paths({"compiled model": args.artifact,
                 **{f"input #{i}": p for i, p in enumerate(args.inputs)}}, {})
    from ..runtime import load, read_artifact_info  # pylint: disable=import-outside-toplevel

    if args.number < 1 or args.repeat < 1:
        raise ArtifactError("--number and --repeat must be at least 1")
    if is_remote(args):
        info = read_artifact_info(args.artifact)
        inputs = _inputs(args, info)
        with open_session(args) as session:
            print(f"device: {session.describe()}")
            model = session.load_library(args.artifact, info)
            result = model.benchmark(*inputs, number=args.number, repeat=args.repeat)
            print(result.summary())
        return
    compiled = load(args.artifact)
    inputs = _inputs(args, compiled.info)
    seconds = compiled.benchmark(*inputs, number=args.number, repeat=args.repeat)
    print(f"median latency {seconds * 1e3:.3f} ms on this machine ({args.repeat} repeats x "
          f"{args.number} runs; {os.environ.get('TVM_NUM_THREADS', os.cpu_count())} threads)")


def register(sub) -> None:
    """Add the subcommand to the subparsers ``sub``."""
    bench = sub.add_parser("bench", help="time a compiled model, here or on a device over RPC",
                           description="Median latency of a compiled model from TVM's time "
                           "evaluator. With --rpc/--tracker the library is uploaded and timed on "
                           "the device; a time measured on the emulated device is qemu's, not a "
                           "phone's, and is labelled so.")
    bench.add_argument("artifact", help="library written by `lut-tvm compile`")
    bench.add_argument("inputs", nargs="*", help="one .npy per model input (default: random)")
    bench.add_argument("--number", type=int, default=10, help="runs per repeat (default 10)")
    bench.add_argument("--repeat", type=int, default=5, help="repeats; the median is reported (default 5)")
    add_remote_arguments(bench)
    bench.set_defaults(func=cmd_bench)
