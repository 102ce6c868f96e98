"""An in-process TVM RPC server for the emulated ARM64 device (also usable on a real board).

The stock ``python -m tvm.exec.rpc_server`` starts its server in a Popen worker that re-executes
``sys.executable``; under ``qemu-aarch64-static`` without binfmt_misc that exec fails. This
launcher runs TVM's own accept loop (``tvm.rpc.server._listen_loop``, tracker protocol
included) in this process, and serves each session in a *forked* child (fork needs no exec,
and the child inherits the already-imported TVM, so a session starts at once). Unlike the
stock loop it does not wait for a session to end before accepting the next one, and a session
that crashes or overruns its ``-timeout`` is reaped/killed without taking the server down.

With ``--start-tracker PORT`` it also runs TVM's RPC tracker (on a thread) and registers with
it, so MetaSchedule's RPC tuning can ask the tracker for this device by ``--key``.

Run with the *device's* python and only TVM's runtime wheels on PYTHONPATH; it imports nothing
from lut_tvm. Prints ``LUT_TVM_RPC_READY <host> <port>`` (and writes ``--ready-file``) once
listening.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

LOG = logging.getLogger("lut_tvm.rpc_launcher")


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9090, help="first port to try (0: any free)")
    parser.add_argument("--port-end", type=int, default=9199, help="last port to try")
    parser.add_argument("--key", default="", help="device key reported to the tracker")
    parser.add_argument("--tracker", default=None, help="HOST:PORT of a TVM RPC tracker")
    parser.add_argument("--start-tracker", type=int, default=None, metavar="PORT",
                        help="also run a TVM RPC tracker on --host, first free port from PORT "
                             "(0: any), and register with it under --key")
    parser.add_argument("--custom-addr", default=None, help="address the tracker hands to clients")
    parser.add_argument("--ready-file", default=None, help="write {host, port, pid} here when ready")
    parser.add_argument("--default-session-timeout", type=float, default=3600.0,
                        help="seconds before a session without -timeout is killed")
    return parser.parse_args(argv)


def _device_info() -> str:
    return json.dumps({
        "machine": platform.machine(),
        "emulated": os.environ.get("LUT_TVM_EMULATED", "") not in ("", "0"),
        "emulator": os.environ.get("LUT_TVM_EMULATED", ""),
        "qemu_cpu": os.environ.get("QEMU_CPU", ""),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "tvm": _TVM_VERSION,
    })


class _WorkDir:
    """What ``tvm.rpc.server._serve_loop`` needs of its work directory."""

    def __init__(self, path: str):
        self.path = path
        self.libs = []

    def relpath(self, name: str) -> str:
        return os.path.join(self.path, name)

    def listdir(self):
        return os.listdir(self.path)


class _Sessions:
    """Forked session processes, reaped (and killed past their deadline) by one thread."""

    def __init__(self, default_timeout: float):
        self.default_timeout = default_timeout
        self.children: dict[int, tuple] = {}  # pid -> (conn, addr, deadline, timeout)
        self.lock = threading.Lock()
        self.listen_socks = []  # closed in each session (it must not hold them open)
        threading.Thread(target=self._reap_forever, daemon=True).start()

    def serve(self, sock, addr, opts, load_library):
        """Replacement for ``tvm.rpc.server._serving``: fork a session, return at once."""
        from tvm.rpc import server as rpc_server  # pylint: disable=import-outside-toplevel

        timeout = opts.get("timeout") or self.default_timeout
        work = tempfile.mkdtemp(prefix="lut_tvm_rpc_")  # removed by the reaper
        pid = os.fork()
        if pid == 0:  # the session
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                for listening in self.listen_socks:
                    listening.close()
                os.chdir(work)
                rpc_server._serve_loop(sock, load_library, _WorkDir(work))
            except BaseException as err:  # pylint: disable=broad-except
                LOG.error("session from %s failed: %s", addr, err)
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        LOG.info("session %d from %s (timeout %gs)", pid, addr, timeout)
        with self.lock:
            self.children[pid] = (sock, addr, time.monotonic() + timeout, timeout, work)

    def _reap_forever(self):
        from tvm.rpc import _ffi_api  # pylint: disable=import-outside-toplevel

        while True:
            time.sleep(0.2)
            with self.lock:
                items = list(self.children.items())
            for pid, (sock, addr, deadline, timeout, work) in items:
                try:
                    done, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done, status = pid, 0
                if not done and time.monotonic() > deadline:
                    LOG.warning("session %d from %s exceeded %gs: killed", pid, addr, timeout)
                    try:
                        _ffi_api.ReturnException(
                            sock.fileno(),
                            f"RPCSessionTimeoutError: Your {timeout}s session has expired, "
                            'try to increase the "session_timeout" value.')
                    except Exception:  # pylint: disable=broad-except
                        pass
                    _kill(pid)
                    done, status = os.waitpid(pid, 0)
                if done:
                    if os.WIFSIGNALED(status):
                        LOG.warning("session %d from %s killed by signal %d", pid, addr,
                                    os.WTERMSIG(status))
                    elif os.WEXITSTATUS(status):
                        LOG.warning("session %d from %s exited with %d", pid, addr,
                                    os.WEXITSTATUS(status))
                    else:
                        LOG.info("session %d from %s finished", pid, addr)
                    sock.close()
                    shutil.rmtree(work, ignore_errors=True)
                    with self.lock:
                        self.children.pop(pid, None)

    def kill_all(self):
        with self.lock:
            pids = list(self.children)
        for pid in pids:
            _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _bind(host: str, port: int, port_end: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ports = [0] if port == 0 else range(port, max(port, port_end) + 1)
    for candidate in ports:
        try:
            sock.bind((host, candidate))
            break
        except OSError:
            continue
    else:
        raise SystemExit(f"rpc_launcher: cannot bind {host} on any port in [{port}, {port_end}]")
    sock.listen(8)
    return sock


def _start_tracker(host: str, port: int) -> socket.socket:
    """TVM's RPC tracker (``tvm.rpc.tracker``, tornado) on a thread of this process; returns its
    listening socket. (``tvm.rpc.tracker.Tracker`` would start it in a re-executed worker, which
    fails under qemu like the stock server.)"""
    from tvm.rpc import base, tracker  # pylint: disable=import-outside-toplevel

    sock = _bind(host, port, port + 9 if port else 0)
    threading.Thread(target=tracker._tracker_server, args=(sock, base.random_key("tracker")),
                     daemon=True, name="rpc-tracker").start()
    LOG.info("tracker listening on %s:%d", host, sock.getsockname()[1])
    return sock


_TVM_VERSION = "?"


def main(argv=None) -> int:
    global _TVM_VERSION  # pylint: disable=global-statement
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s rpc_launcher %(levelname)s: %(message)s")
    start = time.monotonic()
    import tvm  # pylint: disable=import-outside-toplevel
    import tvm_ffi  # pylint: disable=import-outside-toplevel
    from tvm.rpc import server as rpc_server  # pylint: disable=import-outside-toplevel

    _TVM_VERSION = tvm.__version__
    LOG.info("imported tvm %s on %s in %.1fs", tvm.__version__, platform.machine(),
             time.monotonic() - start)
    tvm_ffi.register_global_func("lut_tvm.device_info", _device_info, override=True)

    sessions = _Sessions(args.default_session_timeout)
    rpc_server._serving = sessions.serve  # the stock loop calls it through the module global
    sock = _bind(args.host, args.port, args.port_end)
    sessions.listen_socks.append(sock)
    port = sock.getsockname()[1]
    tracker = None
    if args.start_tracker is not None:
        tracker_sock = _start_tracker(args.host, args.start_tracker)
        sessions.listen_socks.append(tracker_sock)
        tracker = (args.host, tracker_sock.getsockname()[1])
        args.tracker = f"{args.host}:{tracker[1]}"
        args.custom_addr = args.custom_addr or args.host
    elif args.tracker:
        thost, _, tport = args.tracker.rpartition(":")
        tracker = (thost, int(tport))

    def _stop(signum, _frame):
        LOG.info("signal %d: stopping", signum)
        sessions.kill_all()
        os._exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump({"host": args.host, "port": port, "pid": os.getpid(),
                       "tracker": args.tracker, "key": args.key}, out)
        os.replace(tmp, args.ready_file)
    print(f"LUT_TVM_RPC_READY {args.host} {port}", flush=True)
    LOG.info("listening on %s:%d%s", args.host, port,
             f", registered with tracker {args.tracker} as {args.key!r}" if tracker else "")

    while True:  # the stock loop raises on some tracker errors: log and start it again
        try:
            rpc_server._listen_loop(sock, port, args.key, tracker, None, args.custom_addr)
        except Exception as err:  # pylint: disable=broad-except
            LOG.error("accept loop failed (%s); restarting in 1s", err)
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
