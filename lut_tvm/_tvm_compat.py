"""Every call that depends on the TVM release (0.27 here) sits in this one module.

The next TVM release should need changes here only: constant nodes, tensor creation,
targets, the VM, the library exporter and the thread count.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import tempfile
import threading
import types

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


# --- MetaSchedule (lut_tvm.tuning) -------------------------------------------------------------

SCHEDULED_ATTR = "tirx.is_scheduled"


def meta_schedule():
    """The MetaSchedule package (``tvm.meta_schedule`` before 0.27)."""
    from tvm.s_tir import meta_schedule  # pylint: disable=import-outside-toplevel

    return meta_schedule


def subclassable(registered):
    """The Python class behind a MetaSchedule ``derived_object`` (``LocalRunner``, ``RPCRunner``,
    ``LocalBuilder``, ``XGBModel``), to subclass: TVM 0.27 keeps it in the private ``_cls``."""
    return registered._cls  # pylint: disable=protected-access


def local_worker_functions():
    """``(build, run)``: the functions MetaSchedule's local builder and runner run in their worker
    processes (private module-level ``_worker_func`` in TVM 0.27)."""
    ms = meta_schedule()
    return (ms.builder.local_builder._worker_func,  # pylint: disable=protected-access
            ms.runner.local_runner._worker_func)  # pylint: disable=protected-access


def run_evaluator_common(*args, **kwargs):
    """MetaSchedule's shared "time a built candidate" helper (``runner.utils`` in TVM 0.27)."""
    from tvm.s_tir.meta_schedule.runner.utils import run_evaluator_common as run  # pylint: disable=C0415

    return run(*args, **kwargs)


def popen_pool():
    """TVM's worker pool and its status enum: ``(PopenPoolExecutor, StatusKind)``."""
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind  # pylint: disable=import-outside-toplevel

    return PopenPoolExecutor, StatusKind


def is_scheduled(func) -> bool:
    """Whether a PrimFunc carries the is-scheduled mark (set by dlight and the tuning database)."""
    attrs = getattr(func, "attrs", None)
    return bool(attrs is not None and SCHEDULED_ATTR in attrs and int(attrs[SCHEDULED_ATTR]))


def apply_tuning_database(mod, database):
    """Replace every PrimFunc that ``database`` has a record for by its best schedule.

    Runs inside ``with target:``; the applied functions get the is-scheduled mark, so the default
    schedule rules leave them alone.
    """
    with database:
        return tvm.relax.transform.MetaScheduleApplyDatabase()(mod)


def build_tir_for_measure(mod, target):
    """Build one scheduled PrimFunc module for a tuning measurement (the default builder's steps,
    without its import of every GPU tensor intrinsic)."""
    from tvm.driver import build as tvm_build  # pylint: disable=import-outside-toplevel
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock  # pylint: disable=import-outside-toplevel

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def popen_worker_pids() -> list[int]:
    """PIDs of this process's children that are TVM popen workers (builder/runner pools)."""
    import psutil  # pylint: disable=import-outside-toplevel

    found = []
    for child in psutil.Process().children():
        try:
            if any("tvm.exec.popen_worker" in part for part in child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def ordered_union_database(databases):
    """One database over ``databases``: a workload's record comes from the first that has one."""
    return meta_schedule().database.OrderedUnionDatabase(*databases)


CUSTOM_RULE_ANNOTATION = "schedule_rule"


def register_missing_custom_rules(funcs, target) -> list[str]:
    """Register, for each ``schedule_rule`` block annotation in ``funcs`` that names no
    registered function, the fallback MetaSchedule's ApplyCustomRule takes anyway (drop the
    annotation, keep the schedule), under the name it looks up
    (``s_tir.meta_schedule.<target key>.<annotation>``). The design space is the same; what goes
    is its C++ "Unknown schedule rule" warning, printed through the progress bar for every
    task with a pooling op (topi annotates ``meta_schedule.pool_max``). Returns the names added.
    """
    keys = [str(k) for k in target.keys]
    wanted = set()
    for func in funcs:
        for node in walk_tir(func.body):
            annotations = getattr(node, "annotations", None)
            if annotations is not None and CUSTOM_RULE_ANNOTATION in annotations:
                wanted.add(str(annotations[CUSTOM_RULE_ANNOTATION]))
    added = []
    for rule in sorted(wanted - {"None"}):
        names = [f"s_tir.meta_schedule.{key}.{rule}" for key in keys]
        if not names or any(tvm_ffi.get_global_func(n, allow_missing=True) for n in names):
            continue

        def unannotate(sch, block):
            sch.unannotate(block, CUSTOM_RULE_ANNOTATION)
            return [sch]

        tvm_ffi.register_global_func(names[0], unannotate)
        added.append(names[0])
    return added


# --------------------------------------------------------------------------- RPC / deployment
# (used by lut_tvm.deploy; tvm.rpc, tvm.support.cc and the stateful VM calls of TVM 0.27)


_EXPORT_LOCK = threading.Lock()


def export_library(executable, path: str, fcompile=None) -> None:
    """Write ``executable`` as a shared library linked by ``fcompile`` (a ``.tar`` path: objects).

    One export at a time per process: TVM 0.27's ``export_library`` crashes (segfault or abort)
    when threads export concurrently (seen with one executable exported from 8 threads)."""
    with _EXPORT_LOCK:
        executable.export_library(path, fcompile=fcompile)


def executable_assembly(executable) -> str:
    """The assembly of every LLVM-compiled module of an executable, concatenated."""
    seen, chunks = set(), []

    def walk(module):
        if id(module) in seen:
            return
        seen.add(id(module))
        if module.kind == "llvm":
            chunks.append(module.inspect_source("asm"))
        for child in module.imports:
            walk(child)

    walk(executable.mod)
    return "\n".join(chunks)


def rpc_connect(host: str, port: int, key: str = "", session_timeout: float = 0):
    """An RPC session to a server (``tvm.rpc.connect``)."""
    from tvm import rpc  # pylint: disable=import-outside-toplevel

    return rpc.connect(host, port, key=key, session_timeout=session_timeout)


def rpc_tracker_request(host: str, port: int, key: str, session_timeout: float = 0,
                        max_retry: int = 3):
    """An RPC session to a device of ``key`` handed out by a tracker."""
    from tvm import rpc  # pylint: disable=import-outside-toplevel

    tracker = rpc.connect_tracker(host, port)
    return tracker.request(key, session_timeout=session_timeout, max_retry=max_retry)


def remote_virtual_machine(remote_module, device):
    """A Relax VM over a module loaded in an RPC session."""
    return tvm.relax.VirtualMachine(remote_module, device)


def vm_run_stateful(vm, tensors, func_name: str = "main"):
    """Run ``func_name`` with the stateful API (the one that works over RPC for tuple outputs)."""
    vm.set_input(func_name, *tensors)
    vm.invoke_stateful(func_name)
    return vm.get_outputs(func_name)


def vm_time_stateful(vm, device, func_name: str = "main", number: int = 10, repeat: int = 5,
                     min_repeat_ms: int = 0) -> list[float]:
    """Seconds per run of each repeat from the time evaluator (inputs set by ``vm_run_stateful``)."""
    timer = vm.time_evaluator("invoke_stateful", device, number=number, repeat=repeat,
                              min_repeat_ms=min_repeat_ms)
    return [float(t) for t in timer(func_name).results]


# TIR node fields walked by ``walk_tir`` (0.27's tirx has no Python post-order visitor).
_TIR_CHILD_FIELDS = ("body", "block", "seq", "init", "then_case", "else_case", "value", "a", "b",
                     "args", "indices", "condition", "true_value", "false_value", "predicate",
                     "iter_values")


def walk_tir(node):
    """Every statement and expression node under ``node`` (pre-order, any order of siblings)."""
    stack = [node]
    while stack:
        item = stack.pop()
        yield item
        for name in _TIR_CHILD_FIELDS:
            child = getattr(item, name, None)
            if child is None or isinstance(child, (str, int, float)):
                continue
            if isinstance(child, (list, tuple, tvm_ffi.Array)):
                stack.extend(c for c in child if c is not None)
            elif isinstance(child, tvm_ffi.Object):
                stack.append(child)


def buffer_access(node):
    """``(buffer, indices, stored value or None)`` for a buffer load/store node, else None.

    A load is ``TensorLoad`` (``.source``) in 0.27, ``BufferLoad`` (``.buffer``) before.
    """
    kind = type(node).__name__
    if kind in ("TensorLoad", "BufferLoad"):
        buffer = node.source if hasattr(node, "source") else node.buffer
        return buffer, list(node.indices), None
    if kind in ("BufferStore", "TensorStore"):
        buffer = node.buffer if hasattr(node, "buffer") else node.source
        return buffer, list(node.indices), node.value
    return None


def import_cpu_tensor_intrinsics(target) -> None:
    """Register the CPU tensor intrinsics MetaSchedule's default rules name for ``target`` only.

    ``TuneContext`` imports ``tvm.s_tir.tensor_intrin``, whose ``__init__`` also builds every
    GPU intrinsic (one to three minutes on two cores). When that package is not imported yet,
    this puts a bare package in its place and imports just ``x86`` (or ``arm_cpu``) from it, so
    the later import is free. Code needing the GPU intrinsics must import them before tuning.
    """

    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        spec = importlib.util.find_spec(name)
        package = types.ModuleType(name, "CPU tensor intrinsics only (see lut_tvm._tvm_compat)")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        package.__package__ = name
        sys.modules[name] = package
    attrs = {str(k): str(v) for k, v in target.attrs.items()} if target.attrs else {}
    arm = attrs.get("mtriple", "").startswith(("aarch64", "arm")) or "neon" in attrs.get("mattr", "")
    importlib.import_module(f"{name}.{'arm_cpu' if arm else 'x86'}")


def structural_hash(node) -> str:
    """A structural hash of an IR node as 16 hex digits: equal for structurally equal nodes
    (names of the PrimFunc's own variables do not count), stable across processes."""
    return f"{int(tvm_ffi.structural_hash(node)) & 0xFFFFFFFFFFFFFFFF:016x}"


def with_root_lets_and_stores(func, lets: list, stores: list):
    """``func`` (a PrimFunc whose body is one root ``sblock``) with that block's body replaced by
    ``var = value`` bindings (``lets``: (Var, PrimExpr) pairs, in order) then ``stores``
    (BufferStore statements). TVM 0.27's ``LetStmt`` binds without a body (a flat sequence)."""
    from tvm import tirx  # pylint: disable=import-outside-toplevel
    from tvm.s_tir.stmt import SBlock, SBlockRealize  # pylint: disable=import-outside-toplevel

    realize = func.body
    root = realize.block
    body = tirx.SeqStmt([tirx.LetStmt(var, value) for var, value in lets] + list(stores))
    block = SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, body)
    return func.with_body(SBlockRealize(realize.iter_values, realize.predicate, block))


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
