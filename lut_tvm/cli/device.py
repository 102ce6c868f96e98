"""lut-tvm device: provision, start, stop and list the emulated ARM64 device (a real aarch64
TVM RPC server under qemu-aarch64-static on loopback)."""

from __future__ import annotations

from ..deploy.defaults import (DEFAULT_EMULATED_KEY, DEFAULT_HOST, DEFAULT_PORT,
                               DEFAULT_TRACKER_PORT, EMULATED_NOTE)
from ..errors import LutTvmError


_START_TRACKER = "start"  # --tracker without HOST:PORT


def cmd_provision(args) -> None:
    from ..deploy.emulated import provision  # pylint: disable=import-outside-toplevel

    print(f"provisioned {provision(args.cache_dir)}")


def cmd_start(args) -> None:
    from ..deploy.emulated import start_emulated  # pylint: disable=import-outside-toplevel

    if not args.emulated:
        raise LutTvmError("only the emulated device starts from here (--emulated); on a phone start "
                          "the TVM RPC app or `python -m tvm.exec.rpc_server` (README: 'Deploying to "
                          "an ARM phone')")
    print("starting the emulated ARM64 device (provisioning if needed; `import tvm` under qemu "
          "takes 15-40 s) ...", flush=True)
    own_tracker = args.tracker == _START_TRACKER
    device = start_emulated(args.port, host=args.host, qemu_cpu=args.qemu_cpu,
                            tracker=None if own_tracker else args.tracker, key=args.key or "",
                            start_tracker=own_tracker, tracker_port=args.tracker_port,
                            cache=args.cache_dir)
    lines = [f"emulated ARM64 device listening on {device.address} (pid {device.pid}, "
             f"QEMU_CPU={device.qemu_cpu}; log {device.log})"]
    if device.tracker:
        where = f"--tracker {device.tracker} --key {device.key}"
        lines += [f"registered with tracker {device.tracker} as key {device.key!r}"
                  + (" (a tracker the device runs)" if own_tracker else ""),
                  f"use it with: lut-tvm run/bench ... {where}",
                  f"tune on it with: lut-tvm tune MODEL --plan PLAN --target arm64 {where}"]
    else:
        lines.append(f"use it with: lut-tvm run/bench ... --rpc {device.address}")
    lines += [f"note: {EMULATED_NOTE}", f"stop it with: lut-tvm device stop --port {device.port}"]
    print("\n".join(lines))


def cmd_stop(args) -> None:
    from ..deploy.emulated import stop_emulated  # pylint: disable=import-outside-toplevel

    stopped = stop_emulated(args.port, args.cache_dir, kill=args.kill)
    if not stopped:
        print("no emulated device was running" + (f" on port {args.port}" if args.port else ""))
    for device in stopped:
        print(f"stopped the emulated device on {device.address} (pid {device.pid})")


def cmd_status(args) -> None:
    from ..deploy.emulated import running  # pylint: disable=import-outside-toplevel

    devices = running(args.cache_dir)
    if not devices:
        print("no emulated device is running")
    for device in devices:
        tracker = f"  tracker {device.tracker} key {device.key}" if device.tracker else ""
        print(f"{device.address}  pid {device.pid}  QEMU_CPU={device.qemu_cpu}{tracker}  log {device.log}")


def register(sub) -> None:
    """Add the subcommand to the subparsers ``sub``."""
    device = sub.add_parser("device", help="start/stop the emulated ARM64 device (qemu)",
                            description="The emulated ARM64 device: an aarch64 Debian sysroot and "
                            "TVM's aarch64 wheels under qemu-aarch64-static, serving TVM RPC on "
                            "loopback. Times measured on it are not device performance.")
    dsub = device.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    common = dict(metavar="DIR", default=None,
                  help="cache of the sysroot and wheels (default ~/.cache/lut_tvm/arm64 or "
                       "$LUT_TVM_ARM64_CACHE)")

    prov = dsub.add_parser("provision", help="install the host tools, make the sysroot and wheels")
    prov.add_argument("--cache-dir", **common)
    prov.set_defaults(func=cmd_provision)

    start = dsub.add_parser("start", help="provision if needed and start the RPC server")
    start.add_argument("--emulated", action="store_true", help="the qemu-emulated ARM64 device")
    start.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    start.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    start.add_argument("--qemu-cpu", default="cortex-a72",
                       help="QEMU_CPU: cortex-a72 (default, ARMv8.0 + NEON), cortex-a76, a64fx, "
                            "max (every extension: hides mismatches)")
    start.add_argument("--tracker", metavar="HOST:PORT", nargs="?", const=_START_TRACKER,
                       help="register with this RPC tracker; without HOST:PORT the device starts "
                            "its own tracker on --host (port --tracker-port), for `lut-tvm tune`")
    start.add_argument("--tracker-port", type=int, default=DEFAULT_TRACKER_PORT,
                       help=f"port of the tracker --tracker starts (default {DEFAULT_TRACKER_PORT}, "
                            "else the next free one; 0: any)")
    start.add_argument("--key", help="device key to register with the tracker (default "
                       f"{DEFAULT_EMULATED_KEY} with the device's own tracker)")
    start.add_argument("--cache-dir", **common)
    start.set_defaults(func=cmd_start)

    stop = dsub.add_parser("stop", help="stop the emulated device(s)")
    stop.add_argument("--port", type=int, default=None, help="only the one on this port")
    stop.add_argument("--kill", action="store_true", help="SIGKILL at once (no clean shutdown)")
    stop.add_argument("--cache-dir", **common)
    stop.set_defaults(func=cmd_stop)

    status = dsub.add_parser("status", help="list the running emulated devices")
    status.add_argument("--cache-dir", **common)
    status.set_defaults(func=cmd_status)
