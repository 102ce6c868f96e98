"""Helpers for tests of lut_tvm's passes and kernels: build, inspect and run small Relax modules."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir import Op

from schedules.attrs import LUT_KIND_ATTR


def relax_module(input_shape, body, dtype: str = "float32") -> tvm.IRModule:
    """``main(x)`` whose dataflow block is ``body(bb, x)`` (its result is main's output)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(input_shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def run_relax(mod: tvm.IRModule, *inputs, target="llvm") -> np.ndarray:
    """Compile ``mod`` and run ``main`` on NumPy inputs; returns its (single) output."""
    vm = relax.VirtualMachine(tvm.compile(mod, target), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in inputs]).numpy()


def op_calls(mod: tvm.IRModule, name: str) -> list:
    """Every call of the Relax operator ``name`` in ``main``."""
    calls = []
    relax.analysis.post_order_visit(
        mod["main"].body,
        lambda e: calls.append(e)
        if isinstance(e, relax.Call) and isinstance(e.op, Op) and e.op.name == name else None,
    )
    return calls


def lut_calls(mod: tvm.IRModule) -> list:
    """``(kind, call)`` of every call_tir in ``main`` to a PrimFunc tagged with a LUT kind."""
    found = []
    for call in op_calls(mod, "relax.call_tir"):
        func = mod[call.args[0]]
        if func.attrs is not None and LUT_KIND_ATTR in func.attrs:
            found.append((str(func.attrs[LUT_KIND_ATTR]), call))
    return found


def loop_kinds(func) -> list:
    """The ForKind of every loop in a PrimFunc (parallel, vectorized, ...)."""
    from tvm import tirx  # pylint: disable=import-outside-toplevel

    from ._tvm_compat import walk_tir  # pylint: disable=import-outside-toplevel

    return [node.kind for node in walk_tir(func.body) if isinstance(node, tirx.For)]
