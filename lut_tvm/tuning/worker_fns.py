"""What runs inside builder/runner worker processes: a lean build and code-safe inputs."""

from __future__ import annotations

import numpy as np

# Integer inputs no gather bounds (not indices) get small values: any value is valid for them.
_FREE_INT_HIGH = 16


def build_lean(mod, target, _params):
    """Build a scheduled PrimFunc module without importing every GPU tensor intrinsic."""
    from .. import _tvm_compat  # pylint: disable=import-outside-toplevel

    return _tvm_compat.build_tir_for_measure(mod, target)


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
