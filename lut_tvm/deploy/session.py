"""An RPC session to a device (a phone, a board, the emulated ARM64 device): upload a compiled
model, load it, run it on NumPy inputs and time it there.

Every remote step runs with a timeout (``connect_timeout`` for connecting, ``run_timeout`` for
each upload / load / run / bench) and every failure comes back as a ``DeviceError`` naming the
device address and the step, e.g. ``device 127.0.0.1:9090: 'run main' failed: connection
lost ...``. After a timeout or a lost connection the session is closed: connect again.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import _tvm_compat
from ..errors import ArtifactError, LutTvmError
from ..model_io import checked_inputs, flatten_outputs, refuse_non_finite

from .defaults import (  # noqa: F401  (re-exported)
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_RUN_TIMEOUT,
    EMULATED_NOTE,
    DeviceError,
)


def parse_address(text: str, what: str = "--rpc", default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``HOST:PORT`` / ``:PORT`` / ``PORT`` / ``HOST`` -> (host, port); the host defaults to 127.0.0.1."""
    text = (text or "").strip()
    if text.startswith("[") and "]" in text:  # [ipv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif text.isdigit():
        host, port_text = "", text
    else:
        host, port_text = text, ""
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise DeviceError(f"{what} expects HOST:PORT, got {text!r}") from None
    if not 0 < port < 65536:
        raise DeviceError(f"{what} expects HOST:PORT with a port in 1..65535, got {text!r}")
    return host or DEFAULT_HOST, port


def _with_timeout(fn, timeout: float | None):
    """Run ``fn()`` in a daemon thread; returns (finished, result, exception)."""
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as err:  # pylint: disable=broad-except
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True, name="lut_tvm-rpc-step")
    thread.start()
    thread.join(timeout if timeout and timeout > 0 else None)
    if thread.is_alive():
        return False, None, None
    return True, box.get("result"), box.get("error")


def _explain(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    last = text[-1] if text else type(err).__name__
    lowered = str(err).lower()
    if any(s in lowered for s in ("connection reset", "connection refused", "broken pipe",
                                   "sockchannel", "socket closed", "eof", "connection closed",
                                   "kshutdown")):
        return f"connection lost ({last}); is the RPC server still running?"
    if "rpcsessiontimeouterror" in lowered:
        return f"the server ended the session ({last})"
    return last


class RemoteSession:
    """One RPC session. Use ``lut_tvm.deploy.connect`` to make one; close it (or use ``with``)."""

    def __init__(self, rpc_session, address: str, *, run_timeout: float = DEFAULT_RUN_TIMEOUT,
                 via: str = ""):
        self._rpc = rpc_session
        self.address = address
        self.via = via
        self.run_timeout = run_timeout
        self._closed_reason: str | None = None
        self.lost = False  # a step timed out or the connection was lost (not set by ``close``)
        self.info = self._device_info()

    # ------------------------------------------------------------------ steps
    def step(self, name: str, fn, timeout: float | None = None):
        """Run one remote step with the run timeout; failures become DeviceError."""
        if self._closed_reason:
            raise DeviceError(f"device {self.address}: cannot {name}: the session is closed "
                              f"({self._closed_reason}); connect again")
        timeout = self.run_timeout if timeout is None else timeout
        finished, result, error = _with_timeout(fn, timeout)
        if not finished:
            self._abandon(f"{name!r} timed out")
            raise DeviceError(f"device {self.address}{self._label()}: {name!r} did not finish "
                              f"within {timeout:g}s (run timeout); the session was closed")
        if error is not None:
            if isinstance(error, LutTvmError):
                raise error
            reason = _explain(error)
            if reason.startswith(("connection lost", "the server ended")):
                self._abandon(f"{name!r} failed")
            raise DeviceError(f"device {self.address}{self._label()}: {name!r} failed: {reason}") from error
        return result

    def _abandon(self, reason: str) -> None:
        # The RPC call may still be running in its thread: drop our reference and do not reuse it.
        self._closed_reason = reason
        self._rpc = None
        self.lost = True

    def _label(self) -> str:
        return " (emulated)" if self.emulated else ""

    def _device_info(self) -> dict | None:
        """What the lut_tvm launcher reports about the device (None for other RPC servers)."""
        def query():
            try:
                func = self._rpc.get_function("lut_tvm.device_info")
            except Exception:  # pylint: disable=broad-except
                return None  # a stock tvm_rpc server (e.g. the Android app)
            return json.loads(func())

        return self.step("query device info", query)

    @property
    def emulated(self) -> bool:
        return bool(self.info and self.info.get("emulated"))

    def describe(self) -> str:
        """One line about the device: address, machine, and whether it is emulated."""
        if not self.info:
            return f"{self.address}{f' via {self.via}' if self.via else ''}"
        text = f"{self.address} ({self.info.get('machine')}, {self.info.get('cpu_count')} cpus"
        if self.emulated:
            text += f"; {EMULATED_NOTE}, QEMU_CPU={self.info.get('qemu_cpu') or 'default'}"
        return text + ")"

    @property
    def device(self):
        """The remote CPU device."""
        return self._live().cpu()

    def _live(self):
        if self._rpc is None:
            raise DeviceError(f"device {self.address}: the session is closed ({self._closed_reason}); "
                              "connect again")
        return self._rpc

    # ------------------------------------------------------------------ models
    def upload(self, path: str | os.PathLike, name: str | None = None) -> str:
        """Copy a file to the device's session directory; returns its remote name."""
        path = Path(path)
        name = name or path.name
        self.step(f"upload {path.name}", lambda: self._live().upload(str(path), name))
        return name

    def load_module(self, name: str):
        """Load an uploaded shared library with the server's module loader (a remote Module)."""
        return self.step(f"load {name}", lambda: self._live().load_module(name))

    def load_library(self, path: str | os.PathLike, info) -> "RemoteModel":
        """Upload a shared library written by ``CompiledModel.export`` and load it on the device.

        ``info`` is its ArtifactInfo (``lut_tvm.runtime.read_artifact_info``).
        """
        path = Path(path)
        if path.suffix == ".tar":
            raise ArtifactError(f"{str(path)!r} is a .tar of unlinked objects: the device needs a "
                                "shared library; export again with a cross linker "
                                "(aarch64-linux-gnu-g++, ziglang or the Android NDK)")
        if not path.is_file():
            raise ArtifactError(f"compiled model {str(path)!r} does not exist")
        name = self.upload(path)
        module = self.load_module(name)
        device = self.device
        vm = self.step(f"start the VM for {name}",
                       lambda: _tvm_compat.remote_virtual_machine(module, device))
        return RemoteModel(self, vm, info, name)

    def load(self, compiled) -> "RemoteModel":
        """Export a CompiledModel (cross-linked), upload it and load it on the device."""
        with tempfile.TemporaryDirectory(prefix="lut_tvm_deploy_") as tmp:
            path = compiled.export(Path(tmp) / "model.so")
            if path.suffix == ".tar":
                raise ArtifactError(f"cannot deploy: {compiled.export_message}")
            return self.load_library(path, compiled.info)

    def close(self) -> None:
        self._rpc = None
        self._closed_reason = self._closed_reason or "closed by the client"

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.close()


@dataclass
class BenchResult:
    """Remote latency from TVM's time evaluator: ``repeat`` repeats of ``number`` runs each."""

    median_s: float
    repeats_s: list[float]
    number: int
    repeat: int
    device: str
    emulated: bool
    info: dict | None = field(default=None, repr=False)

    @property
    def median_ms(self) -> float:
        return self.median_s * 1e3

    def summary(self) -> str:
        reps = ", ".join(f"{t * 1e3:.3f}" for t in self.repeats_s)
        text = (f"median latency {self.median_ms:.3f} ms on {self.device} "
                f"({self.repeat} repeats x {self.number} runs; per-repeat ms: {reps})")
        if self.emulated:
            cpu = (self.info or {}).get("qemu_cpu") or "default"
            text += f" [{EMULATED_NOTE}; qemu-aarch64 QEMU_CPU={cpu}]"
        return text


class RemoteModel:
    """A compiled model loaded on a device: call it with NumPy arrays, get NumPy arrays back."""

    def __init__(self, session: RemoteSession, vm, info, name: str):
        self.session = session
        self.vm = vm
        self.info = info
        self.name = name

    def _set_inputs(self, inputs, check_finite: bool = True):
        arrays = checked_inputs(self.info, inputs)
        if check_finite:
            refuse_non_finite(self.info, arrays)
        device = self.session.device

        def upload():
            return [_tvm_compat.to_device(a, device) for a in arrays]

        return self.session.step("copy inputs to the device", upload)

    def __call__(self, *inputs, check_finite: bool = True):
        """Run on the device; returns one NumPy array, or a tuple for several outputs. Inputs
        holding NaN or infinity are refused, as ``CompiledModel`` refuses them."""
        tensors = self._set_inputs(inputs, check_finite)
        result = self.session.step("run main", lambda: _tvm_compat.vm_run_stateful(self.vm, tensors))
        outputs = self.session.step("fetch outputs", lambda: flatten_outputs(result))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def benchmark(self, *inputs, number: int = 10, repeat: int = 5, min_repeat_ms: int = 0,
                  timeout: float | None = None) -> BenchResult:
        """Time ``main`` on the device with TVM's time evaluator (the median of ``repeat``)."""
        tensors = self._set_inputs(inputs)
        self.session.step("set inputs for bench", lambda: self.vm.set_input("main", *tensors))
        repeats = self.session.step(
            "bench main",
            lambda: _tvm_compat.vm_time_stateful(self.vm, self.session.device, "main", number,
                                                 repeat, min_repeat_ms),
            timeout=timeout)
        return BenchResult(float(np.median(repeats)), repeats, number, repeat,
                           self.session.address, self.session.emulated, self.session.info)


def _probe(host: str, port: int, timeout: float, what: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise DeviceError(f"{what} {host}:{port}: cannot connect ({err.strerror or err}); "
                          "is the RPC server running? (`lut-tvm device start --emulated` starts "
                          "the emulated one)") from None


def connect(rpc: str | None = None, *, tracker: str | None = None, key: str | None = None,
            connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
            run_timeout: float = DEFAULT_RUN_TIMEOUT, session_timeout: float = 0) -> RemoteSession:
    """An RPC session: ``rpc="HOST:PORT"`` for a server, or ``tracker="HOST:PORT", key=KEY``.

    ``connect_timeout`` bounds reaching the server (or the tracker handing out a device);
    ``run_timeout`` bounds each later step; ``session_timeout`` (0: none) asks the server to end
    the session after that many seconds.
    """
    if bool(rpc) == bool(tracker):
        raise DeviceError("give either an RPC server (--rpc HOST:PORT) or a tracker "
                          "(--tracker HOST:PORT --key KEY)")
    if tracker:
        if not key:
            raise DeviceError("--tracker needs --key: the device key the server registered with")
        host, port = parse_address(tracker, "--tracker", default_port=9190)
        _probe(host, port, connect_timeout, "tracker")

        def open_session():
            return _tvm_compat.rpc_tracker_request(host, port, key, session_timeout=session_timeout)

        what, via = f"tracker {host}:{port} key {key!r}", f"tracker {host}:{port}"
    else:
        host, port = parse_address(rpc, "--rpc")
        _probe(host, port, connect_timeout, "device")

        def open_session():
            return _tvm_compat.rpc_connect(host, port, key or "", session_timeout=session_timeout)

        what, via = f"device {host}:{port}", ""
    finished, sess, error = _with_timeout(open_session, connect_timeout)
    if not finished:
        raise DeviceError(f"{what}: no RPC session within {connect_timeout:g}s (connect timeout): "
                          "the server is busy, the key is wrong or no device is free")
    if error is not None:
        raise DeviceError(f"{what}: could not open an RPC session: {_explain(error)}") from error
    address = f"{host}:{port}" if not tracker else f"{key}@{host}:{port}"
    return RemoteSession(sess, address, run_timeout=run_timeout, via=via)
