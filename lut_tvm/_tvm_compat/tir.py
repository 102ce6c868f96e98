"""TIR walking, hashing and rewriting helpers of TVM 0.27's ``tirx`` (used by the schedules' checks and tuning)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import tvm_ffi


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
