"""Every call that depends on the TVM release (0.27 here) sits in this one package.

The next TVM release should need changes here only: constant nodes, tensor creation,
targets, the VM and the thread count here; TIR walking and hashing in ``tir``; MetaSchedule's
private pieces in ``meta_schedule``; RPC, the library exporter and the stateful VM calls in
``rpc``. Callers use ``lut_tvm._tvm_compat.<name>`` for all of them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading

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
    from .. import errors  # pylint: disable=import-outside-toplevel

    for cls in (errors.LutTvmError, errors.PlanError, errors.ModelLoadError,
                errors.TargetError, errors.ArtifactError):
        tvm_ffi.register_error(cls.__name__, cls)


_register_ffi_errors()


_NATIVE_LOG_NOISE = ("Scope Saving:", "Scope Loaded:")
_native_log_lock = threading.Lock()
_native_log_state = {"depth": 0, "saved_fd": -1, "capture": None}


@contextlib.contextmanager
def quiet_native_log():
    """Drop the "Scope Saving:"/"Scope Loaded:" warnings that TVM's C++ VM executable writes to
    the process's stderr (fd 2) once per function on every export/load; anything else it
    writes there is passed on to ``sys.stderr`` afterwards. Nested and concurrent uses share one
    redirection (the first in starts it, the last out ends it)."""

    state = _native_log_state
    with _native_log_lock:
        if state["depth"] == 0:
            sys.stderr.flush()
            state["capture"] = tempfile.TemporaryFile()  # noqa: SIM115 (closed on the way out)
            state["saved_fd"] = os.dup(2)
            os.dup2(state["capture"].fileno(), 2)
        state["depth"] += 1
    try:
        yield
    finally:
        with _native_log_lock:
            state["depth"] -= 1
            if state["depth"] == 0:
                os.dup2(state["saved_fd"], 2)
                os.close(state["saved_fd"])
                capture, state["capture"] = state["capture"], None
                capture.seek(0)
                text = capture.read().decode("utf-8", "replace")
                capture.close()
                kept = [line for line in text.splitlines(keepends=True)
                        if not any(noise in line for noise in _NATIVE_LOG_NOISE)]
                if kept:
                    sys.stderr.write("".join(kept))


def target_has_feature(feature: str, target) -> bool:
    """Whether LLVM says ``target`` (its mtriple/mcpu/mattr) has the CPU ``feature`` (e.g. "avx512bw")."""
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    try:
        with target:
            return bool(codegen.target_has_features(feature, target))
    except Exception:  # pylint: disable=broad-except  (an unknown feature name or a non-LLVM target)
        return False



def llvm_host_cpu() -> str:
    """LLVM's name for this machine's CPU model (e.g. "znver4"), what ``-mcpu=native`` would pick."""
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    return str(codegen.llvm_get_system_cpu())


# The other parts of the package, under the same names (defined after the basics they use).
from .tir import (  # noqa: E402  pylint: disable=wrong-import-position
    walk_tir as walk_tir,
    buffer_access as buffer_access,
    import_cpu_tensor_intrinsics as import_cpu_tensor_intrinsics,
    structural_hash as structural_hash,
    with_root_lets_and_stores as with_root_lets_and_stores,
)
from .meta_schedule import (  # noqa: E402  pylint: disable=wrong-import-position
    SCHEDULED_ATTR as SCHEDULED_ATTR,
    meta_schedule as meta_schedule,
    subclassable as subclassable,
    local_worker_functions as local_worker_functions,
    run_evaluator_common as run_evaluator_common,
    popen_pool as popen_pool,
    is_scheduled as is_scheduled,
    apply_tuning_database as apply_tuning_database,
    build_tir_for_measure as build_tir_for_measure,
    popen_worker_pids as popen_worker_pids,
    ordered_union_database as ordered_union_database,
    CUSTOM_RULE_ANNOTATION as CUSTOM_RULE_ANNOTATION,
    register_missing_custom_rules as register_missing_custom_rules,
)
from .rpc import (  # noqa: E402  pylint: disable=wrong-import-position
    export_library as export_library,
    executable_assembly as executable_assembly,
    rpc_connect as rpc_connect,
    rpc_tracker_request as rpc_tracker_request,
    remote_virtual_machine as remote_virtual_machine,
    vm_run_stateful as vm_run_stateful,
    vm_time_stateful as vm_time_stateful,
)
