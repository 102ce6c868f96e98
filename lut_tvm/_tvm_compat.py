"""Every call that depends on the TVM release (0.27 here) sits in this one module.

The next TVM release should need changes here only: constant nodes, tensor creation,
targets, the VM, the library exporter and the thread count.
"""

from __future__ import annotations

import os

import numpy as np
import tvm
import tvm_ffi
from tvm.ir.expr import Constant as _Constant

TVM_VERSION = tvm.__version__


def is_constant(expr) -> bool:
    """Whether a Relax expression is a constant tensor (``relax.Constant`` before 0.27)."""
    return isinstance(expr, _Constant)


def constant_value(expr) -> np.ndarray:
    """The NumPy value of a Relax constant."""
    return expr.value.numpy()


def to_device(array: np.ndarray, device=None):
    """A TVM runtime tensor holding ``array`` (``tvm.nd.array`` before 0.27)."""
    return tvm.runtime.tensor(np.ascontiguousarray(array), device or tvm.cpu())


def make_target(spec) -> tvm.target.Target:
    """A TVM target from a dict (0.27 targets are dicts, not CLI strings)."""
    return tvm.target.Target(spec)


def virtual_machine(executable, device=None):
    """A Relax VM over a compiled or loaded executable."""
    return tvm.relax.VirtualMachine(executable, device or tvm.cpu())


def load_module(path: str):
    """Load an exported shared library as a VM executable."""
    return tvm.runtime.load_module(path)


def set_num_threads(num_threads: int | None) -> None:
    """Ask TVM's thread pool for ``num_threads`` workers (read when the pool starts)."""
    if num_threads:
        os.environ["TVM_NUM_THREADS"] = str(num_threads)


def cpu_device():
    """The host CPU device."""
    return tvm.cpu()


def default_schedule_pass(rules):
    """dlight's pass applying the first matching schedule rule to every PrimFunc."""
    from tvm.s_tir import dlight  # pylint: disable=import-outside-toplevel

    return dlight.ApplyDefaultSchedule(*rules)


def build_executable(mod, target):
    """Lower a scheduled Relax module to a VM executable with the CPU backend's late phases."""
    from tvm.relax.backend.cpu_generic import pipeline  # pylint: disable=import-outside-toplevel

    late = tvm.transform.Sequential(
        pipeline.dataflow_lower_passes(target) + pipeline.finalize_passes(target)
    )
    return tvm.compile(mod, target, relax_pipeline=late)


def var_name(var) -> str:
    """The name of a Relax variable (``name_hint`` before 0.27)."""
    return str(var.name)


def _register_ffi_errors() -> None:
    """Let lut_tvm's exceptions raised in a Python pass cross TVM's FFI as themselves."""
    from . import errors  # pylint: disable=import-outside-toplevel

    for cls in (errors.LutTvmError, errors.PlanError, errors.ModelLoadError,
                errors.TargetError, errors.ArtifactError):
        tvm_ffi.register_error(cls.__name__, cls)


_register_ffi_errors()
