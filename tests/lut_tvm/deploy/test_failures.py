"""A device that dies or hangs gives a clear error naming the device and the step, and the
device (or a new one) is usable afterwards. On the emulated ARM64 device."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from lut_tvm.deploy import DeviceError

LONG_BENCH = dict(number=100000, repeat=1)  # hours under qemu: only ever interrupted


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _bench_in_thread(remote, x):
    box = {}

    def target():
        try:
            box["result"] = remote.benchmark(x, **LONG_BENCH)
        except BaseException as err:  # pylint: disable=broad-except
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    time.sleep(3)  # well into the bench
    assert thread.is_alive(), f"the long bench ended early: {box}"
    return thread, box


def test_run_timeout_closes_the_session_and_the_device_stays_usable(digits, digits_lib, arm64_device, digits_codes):
    # session_timeout: the server kills the abandoned session's process after 30 s
    session = arm64_device.connect(run_timeout=120, session_timeout=30)
    remote = session.load_library(digits_lib, digits.arm64.info)
    with pytest.raises(DeviceError) as err:
        remote.benchmark(digits.x, timeout=2, **LONG_BENCH)
    message = str(err.value)
    assert arm64_device.address in message and "'bench main'" in message and "within 2s" in message
    with pytest.raises(DeviceError, match="session is closed"):
        remote(digits.x)
    # the server serves sessions concurrently: a new one works while the old one is still busy
    with arm64_device.connect() as fresh:
        digits.assert_matches(fresh.load_library(digits_lib, digits.arm64.info)(digits.x), digits_codes)


def test_crashed_session_gives_clear_error_and_server_survives(digits, digits_lib, arm64_device, digits_codes):
    session = arm64_device.connect()
    remote = session.load_library(digits_lib, digits.arm64.info)
    before = set(_children(arm64_device.pid))
    thread, box = _bench_in_thread(remote, digits.x)
    sessions = set(_children(arm64_device.pid))
    assert sessions, "the server has no session process"
    for pid in sessions - before or sessions:
        os.kill(pid, signal.SIGKILL)  # the session process crashes mid-run
    thread.join(60)
    assert not thread.is_alive(), "the client did not notice the crash"
    error = box.get("error")
    assert isinstance(error, DeviceError), box
    assert arm64_device.address in str(error) and "'bench main'" in str(error)
    assert "connection lost" in str(error)
    assert arm64_device.alive()
    with arm64_device.connect() as again:
        digits.assert_matches(again.load_library(digits_lib, digits.arm64.info)(digits.x), digits_codes)


def test_killed_server_gives_clear_error_and_a_new_server_works(digits, digits_lib, start_device, digits_codes):
    doomed = start_device()
    session = doomed.connect()
    remote = session.load_library(digits_lib, digits.arm64.info)
    thread, box = _bench_in_thread(remote, digits.x)
    doomed.stop(kill=True)  # the whole device goes away mid-run (server and sessions)
    thread.join(60)
    assert not thread.is_alive(), "the client did not notice the dead device"
    error = box.get("error")
    assert isinstance(error, DeviceError), box
    text = str(error)
    assert f"device {doomed.address}" in text and "'bench main'" in text and "connection lost" in text
    with pytest.raises(DeviceError, match=f"{doomed.address}: cannot connect"):
        doomed.connect(connect_timeout=5)

    fresh = start_device()  # a new device is usable after
    with fresh.connect() as again:
        digits.assert_matches(again.load_library(digits_lib, digits.arm64.info)(digits.x), digits_codes)


def test_device_behind_a_tracker(digits, digits_lib, start_device, digits_codes):
    try:
        from tvm.rpc.tracker import Tracker
    except ImportError as err:  # running a tracker needs tornado on the host (connecting does not)
        pytest.skip(f"cannot run a TVM RPC tracker on this host: {err}")
    tracker = Tracker(host="127.0.0.1", port=9300, port_end=9400, silent=True)
    try:
        address = f"127.0.0.1:{tracker.port}"
        device = start_device(tracker=address, key="arm64-emulated")
        with device.connect(connect_timeout=60) as session:
            assert session.emulated and session.address == f"arm64-emulated@{address}"
            digits.assert_matches(session.load_library(digits_lib, digits.arm64.info)(digits.x), digits_codes)
    finally:
        tracker.terminate()


def test_cli_run_via_tracker_needs_a_key(digits_lib, tmp_path, capsys):
    import numpy as np

    from lut_tvm.cli import main

    x = tmp_path / "x.npy"
    np.save(x, np.zeros((32, 1, 8, 8), np.float32))
    assert main(["run", str(digits_lib), str(x), "--tracker", "127.0.0.1:1"]) == 2
    assert "--key" in capsys.readouterr().err
