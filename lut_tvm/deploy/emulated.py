"""An emulated ARM64 phone: a real aarch64 TVM RPC server under ``qemu-aarch64-static`` on loopback.

``provision()`` runs ``scripts/arm64_device/provision.sh`` (host tools by apt, an arm64 Debian
sysroot by mmdebstrap, TVM's aarch64 wheels by the host pip; cached under
``~/.cache/lut_tvm/arm64``, or ``$LUT_TVM_ARM64_CACHE``). ``start_emulated()`` starts
``scripts/arm64_device/rpc_launcher.py`` with the sysroot's python3.11 under qemu and waits until
it listens (with ``start_tracker=True`` the launcher also runs a TVM RPC tracker and registers
with it, which MetaSchedule's RPC tuning needs); ``stop_emulated()`` stops it. Each running
server leaves a state file ``server-<port>.json`` in the cache directory, so ``lut-tvm device
stop`` from another shell finds it.

Times measured on it are qemu's, not a phone's: every report of one says so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..files import write_json_atomic
from .defaults import DEFAULT_EMULATED_KEY, DEFAULT_PORT, DEFAULT_TRACKER_PORT, DeviceError

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "scripts" / "arm64_device"
DEFAULT_QEMU_CPU = "cortex-a72"  # NEON only; "max" accepts every extension and hides mismatches
DEFAULT_READY_TIMEOUT = 240.0  # `import tvm` alone takes ~15-30 s under emulation
PROVISION_CANNOT = 3  # provision.sh's exit status for "cannot provision on this machine"


class ProvisionError(DeviceError):
    """The emulated device cannot be provisioned on this machine (no apt, root, disk or network)."""


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Where the sysroot, wheels and server state files live."""
    if path:
        return Path(path).expanduser()
    return Path(os.environ.get("LUT_TVM_ARM64_CACHE", "~/.cache/lut_tvm/arm64")).expanduser()


def _script(name: str) -> Path:
    script = SCRIPTS_DIR / name
    if not script.is_file():
        raise ProvisionError(f"{script} is missing: the emulated device needs a source checkout "
                             "of lut_tvm (scripts/arm64_device/)")
    return script


def provision(cache: str | os.PathLike | None = None, *, python: str | None = None,
              quiet: bool = False) -> Path:
    """Make the sysroot and wheels (a second or two when already cached); returns the cache dir.

    Raises ProvisionError with the script's reason when this machine cannot provision it.
    """
    cache = cache_dir(cache)
    env = dict(os.environ, PYTHON=python or sys.executable)
    proc = subprocess.run(["bash", str(_script("provision.sh")), str(cache)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if not quiet and proc.stderr:
        sys.stderr.write("".join(line + "\n" for line in proc.stderr.splitlines()
                                 if line.startswith("[arm64-device]")))
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "cannot provision" in line),
                      lines[-1] if lines else f"exit status {proc.returncode}")
        raise ProvisionError(reason.removeprefix("[arm64-device] ")
                             + ("" if proc.returncode == PROVISION_CANNOT
                                else f" (provision.sh exit status {proc.returncode})"))
    return cache


@dataclass
class EmulatedDevice:
    """A running emulated ARM64 RPC server (its process group is ``pid``)."""

    host: str
    port: int
    pid: int
    qemu_cpu: str
    log: str
    cache: str
    tracker: str | None = None
    key: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self, **kwargs):
        """An RPC session to this device (``lut_tvm.deploy.connect`` keyword arguments)."""
        from .session import connect  # pylint: disable=import-outside-toplevel

        if self.tracker:
            return connect(tracker=self.tracker, key=self.key, **kwargs)
        return connect(self.address, **kwargs)

    def alive(self) -> bool:
        return _pid_is_launcher(self.pid)

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the server and its sessions (SIGTERM, then SIGKILL; ``kill``: SIGKILL at once)."""
        _stop_group(self.pid, kill=kill, timeout=timeout)
        state = _state_file(Path(self.cache), self.port)
        try:
            if json.loads(state.read_text()).get("pid") == self.pid:
                state.unlink()
        except (OSError, ValueError):
            pass

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.stop()


def _state_file(cache: Path, port: int) -> Path:
    return cache / f"server-{port}.json"


def _pid_is_launcher(pid: int) -> bool:
    """Whether ``pid`` is alive and is an rpc_launcher.py under qemu (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if status.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return any(arg.endswith(b"rpc_launcher.py") for arg in cmdline)


def _stop_group(pid: int, *, kill: bool, timeout: float) -> None:
    if not _pid_is_launcher(pid):
        return
    try:
        os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_is_launcher(pid):
        _reap(pid)
        time.sleep(0.1)
    if _pid_is_launcher(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def start_emulated(port: int = DEFAULT_PORT, *, host: str = "127.0.0.1",
                   qemu_cpu: str = DEFAULT_QEMU_CPU, tracker: str | None = None, key: str = "",
                   start_tracker: bool = False, tracker_port: int = DEFAULT_TRACKER_PORT,
                   cache: str | os.PathLike | None = None, ready_timeout: float = DEFAULT_READY_TIMEOUT,
                   do_provision: bool = True, quiet: bool = False) -> EmulatedDevice:
    """Provision (if needed) and start the emulated device; returns once it accepts sessions.

    ``port=0`` picks a free port. ``tracker="HOST:PORT"`` registers it with a TVM RPC tracker
    under ``key`` (then connect through the tracker); ``start_tracker=True`` has the device run
    its own tracker on ``host`` (first free port from ``tracker_port``, 0: any) and register
    there (key default ``arm64-emulated``): what ``lut-tvm tune --tracker`` needs. ``qemu_cpu``
    is QEMU_CPU (cortex-a72: ARMv8.0 + NEON, like most phones' little cores; ``max`` enables
    every extension).
    """
    if start_tracker and tracker:
        raise DeviceError("give either tracker=HOST:PORT (an existing tracker) or "
                          "start_tracker=True (the device starts one), not both")
    if start_tracker:
        key = key or DEFAULT_EMULATED_KEY
    cache = provision(cache, quiet=quiet) if do_provision else cache_dir(cache)
    sysroot, site = cache / "sysroot", cache / "site"
    if not (sysroot / ".done").is_file() or not (site / ".done").is_file():
        raise ProvisionError(f"{cache} is not provisioned (run `lut-tvm device provision`)")
    if port:
        state = _state_file(cache, port)
        if state.is_file():
            old = json.loads(state.read_text())
            if _pid_is_launcher(old.get("pid", -1)):
                raise DeviceError(f"an emulated device already runs on {old['host']}:{port} "
                                  f"(pid {old['pid']}); stop it with `lut-tvm device stop --port {port}`")
    logs = cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for old_log in sorted(logs.glob("server-*.log"), key=lambda p: p.stat().st_mtime)[:-20]:
        old_log.unlink(missing_ok=True)  # keep the newest 20
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_path = logs / f"server-{port or 'any'}-{stamp}-{os.getpid()}.log"
    ready = logs / f".ready-{os.getpid()}-{time.monotonic_ns()}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_", "VIRTUAL_ENV"))}
    env.update(QEMU_LD_PREFIX=str(sysroot), QEMU_CPU=qemu_cpu, PYTHONPATH=str(site),
               LUT_TVM_EMULATED="qemu-aarch64")
    cmd = ["qemu-aarch64-static", str(sysroot / "usr/bin/python3.11"), str(_script("rpc_launcher.py")),
           "--host", host, "--port", str(port), "--ready-file", str(ready)]
    if tracker:
        cmd += ["--tracker", tracker, "--key", key, "--custom-addr", host]
    elif start_tracker:
        cmd += ["--start-tracker", str(tracker_port), "--key", key, "--custom-addr", host]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, cwd=str(cache))
    deadline = time.monotonic() + ready_timeout
    while not ready.is_file():
        if proc.poll() is not None:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            raise DeviceError(f"the emulated device exited with status {proc.returncode} before "
                              f"listening; log {log_path}:\n{tail}")
        if time.monotonic() > deadline:
            _stop_group(proc.pid, kill=True, timeout=5)
            raise DeviceError(f"the emulated device did not listen within {ready_timeout:g}s; "
                              f"log {log_path}")
        time.sleep(0.25)
    info = json.loads(ready.read_text())
    ready.unlink()
    device = EmulatedDevice(host, int(info["port"]), proc.pid, qemu_cpu, str(log_path), str(cache),
                            info.get("tracker") or tracker, key)
    write_json_atomic(_state_file(cache, device.port), asdict(device))
    return device


def running(cache: str | os.PathLike | None = None) -> list[EmulatedDevice]:
    """The emulated devices started from this cache that are still running."""
    found = []
    for state in sorted(cache_dir(cache).glob("server-*.json")):
        try:
            device = EmulatedDevice(**json.loads(state.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if device.alive():
            found.append(device)
        else:
            state.unlink(missing_ok=True)
    return found


def stop_emulated(port: int | None = None, cache: str | os.PathLike | None = None,
                  *, kill: bool = False) -> list[EmulatedDevice]:
    """Stop the emulated device on ``port`` (every one started from this cache when None)."""
    stopped = []
    for device in running(cache):
        if port is None or device.port == port:
            device.stop(kill=kill)
            stopped.append(device)
    return stopped
