"""lut-tvm run: a compiled model on .npy inputs, output to .npy; on this machine or, with
--rpc HOST:PORT / --tracker HOST:PORT --key KEY, on a remote device over TVM RPC."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..deploy.cli_options import add_remote_arguments, is_remote, open_session
from ..errors import ArtifactError
from .common import check_paths, load_array


def _output_path(args, num_outputs: int) -> Path:
    """np.save/np.savez append .npy/.npz to a name without it: the file really written."""
    suffix = ".npy" if num_outputs == 1 else ".npz"
    out = Path(args.output)
    return out if out.suffix == suffix else out.with_name(out.name + suffix)


def cmd_run(args) -> None:
    inputs = {"compiled model": args.artifact, **{f"input #{i}": p for i, p in enumerate(args.inputs)}}
    for suffix_count in (1, 2):  # the output count is known after loading: check both names
        check_paths(inputs, {"output": _output_path(args, suffix_count)})
    from ..runtime import load, read_artifact_info  # pylint: disable=import-outside-toplevel

    session = None
    if is_remote(args):  # the library is for the device: read its description, do not load it here
        info = read_artifact_info(args.artifact)
    else:
        compiled = load(args.artifact)
        info = compiled.info
    inputs = [load_array(path, "input") for path in args.inputs]
    if len(inputs) == len(info.input_names):  # a count mismatch is reported by the model
        for path, name, shape, array in zip(args.inputs, info.input_names, info.input_shapes, inputs):
            if list(array.shape) != list(shape):
                raise ArtifactError(f"input file {path!r} has shape {list(array.shape)}, but "
                                    f"{args.artifact!r} takes input {name!r} of shape {list(shape)}")
    if is_remote(args):
        session = open_session(args)
        print(f"device: {session.describe()}")
        compiled = session.load_library(args.artifact, info)
    outputs = compiled(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    out = _output_path(args, len(outputs))
    out.parent.mkdir(parents=True, exist_ok=True)
    if len(outputs) == 1:
        np.save(out, outputs[0])
    else:
        np.savez(out, *outputs)
    print(f"wrote {out}: " + ", ".join(f"{list(o.shape)} {o.dtype}" for o in outputs))
    if args.time and session is not None:
        print(compiled.benchmark(*inputs).summary())
    elif args.time:
        print(f"median latency: {compiled.benchmark(*inputs) * 1e3:.3f} ms "
              f"({os.environ.get('TVM_NUM_THREADS', os.cpu_count())} threads)")
    if session is not None:
        session.close()


def register(sub) -> None:
    """Add the subcommand to the subparsers ``sub``."""
    run = sub.add_parser("run", help="run a compiled model on .npy inputs",
                         description="Load a compiled model and run it on one .npy per input.")
    run.add_argument("artifact", help="library written by `lut-tvm compile`")
    run.add_argument("inputs", nargs="+", help="one .npy per model input")
    run.add_argument("-o", "--output", default="output.npy", help="where to write the output(s)")
    run.add_argument("--time", action="store_true", help="also report the median latency")
    add_remote_arguments(run)
    run.set_defaults(func=cmd_run)
