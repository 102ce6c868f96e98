"""What runs inside builder/runner worker processes: a lean build and code-safe inputs."""

from __future__ import annotations

import numpy as np

# Integer inputs no gather bounds (not indices) get small values: any value is valid for them.
_FREE_INT_HIGH = 16


def build_lean(mod, target, _params):
    """Build a scheduled PrimFunc module without importing every GPU tensor intrinsic."""
    from .. import _tvm_compat  # pylint: disable=import-outside-toplevel

    return _tvm_compat.build_tir_for_measure(mod, target)


def ignore_sigint() -> None:
    """Worker initializer: Ctrl-C at the terminal reaches every process of the foreground group;
    the main process stops the workers itself (no traceback from each of them)."""
    import signal  # pylint: disable=import-outside-toplevel

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def warm_up() -> None:
    """Import what a build needs, so the first real build does not pay for it."""
    from .. import _tvm_compat  # pylint: disable=import-outside-toplevel,unused-import
    from tvm.driver import build  # pylint: disable=import-outside-toplevel,unused-import


def _values(rng, dtype: str, shape, high):
    if high is not None:
        return rng.integers(0, max(1, int(high)), size=shape).astype(dtype)
    if dtype.startswith(("float", "bfloat")):
        return rng.standard_normal(size=shape).astype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype == "int8":
        return rng.integers(-127, 128, size=shape).astype(dtype)
    if dtype.startswith("int"):
        return rng.integers(-_FREE_INT_HIGH, _FREE_INT_HIGH, size=shape).astype(dtype)
    return rng.integers(0, _FREE_INT_HIGH, size=shape).astype(dtype)


def alloc_arguments(bounds, device, args_info, alloc_repeat):
    """Arguments per ``args_info``; argument i is an integer in ``[0, bounds[i])`` when bounded.

    ``bounds`` comes from ``measure.index_bounds`` (codes get ``[0, K)``), so a kernel that
    gathers by code never reads outside its table; floats are standard normal, int8 in range.
    """
    from .. import _tvm_compat  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(0)
    repeated = []
    for _ in range(alloc_repeat):
        args = []
        for index, info in enumerate(args_info):
            _, dtype, shape = info
            high = bounds[index] if bounds and index < len(bounds) else None
            args.append(_tvm_compat.to_device(_values(rng, str(dtype), [int(s) for s in shape], high),
                                              device))
        repeated.append(args)
    return repeated


def export_shared(linker, rt_mod) -> str:
    """Write a built candidate as a shared library for the remote device, linked by ``linker``
    (a ``lut_tvm.deploy.linker.Linker``; None: the host compiler), in a fresh temp folder."""
    import os  # pylint: disable=import-outside-toplevel
    import tempfile  # pylint: disable=import-outside-toplevel

    from .. import _tvm_compat  # pylint: disable=import-outside-toplevel

    path = os.path.join(tempfile.mkdtemp(prefix="lut_tvm_candidate_"), "candidate.so")
    _tvm_compat.export_library(rt_mod, path, fcompile=linker.fcompile() if linker else None)
    return path


def measure_on_device(connect_kwargs: dict, bounds, evaluator_config, alloc_repeat: int,
                      artifact_path: str, args_info) -> tuple:
    """Time one candidate on the remote device: connect, upload, load with the server's module
    loader, copy code-safe inputs made here, run TVM's time evaluator there.

    Returns ``("ok", seconds)``, ``("failed", message)`` for a candidate that failed on a working
    connection, or ``("lost", message)`` when the connection failed or a step timed out; each
    message names the device and the step (``lut_tvm.deploy.connect`` runs each step with a timeout).
    """
    import os  # pylint: disable=import-outside-toplevel

    from .._tvm_compat import run_evaluator_common  # pylint: disable=import-outside-toplevel

    from ..deploy.session import DeviceError, connect  # pylint: disable=import-outside-toplevel

    try:
        session = connect(**connect_kwargs)
    except DeviceError as err:
        return "lost", f"{err} (step 'connect')"
    try:
        name = session.upload(artifact_path, f"{os.path.basename(os.path.dirname(artifact_path))}.so")
        module = session.load_module(name)
        device = session.device
        args = session.step("copy inputs to the device",
                            lambda: alloc_arguments(bounds, device, args_info, alloc_repeat))
        secs = session.step("time the candidate", lambda: run_evaluator_common(
            module, device, evaluator_config, args))
        return "ok", secs
    except DeviceError as err:
        return ("lost" if session.lost else "failed"), str(err)
    finally:
        session.close()
