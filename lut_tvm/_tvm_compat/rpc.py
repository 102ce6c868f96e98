"""RPC, the library exporter and the stateful VM calls of TVM 0.27 (used by lut_tvm.deploy)."""

from __future__ import annotations

import threading

import tvm


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


