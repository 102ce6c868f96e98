"""Tuning on the emulated ARM64 device over TVM RPC: candidates cross-built here and timed there
(through a tracker the device runs, or straight to its server); the log is applied by
``compile(target="arm64")`` and the tuned model, run on the device, equals the NumPy reference.
A dead tracker, and a device that dies mid-tune, give errors naming the host and the step.

Times measured here are qemu's, not a phone's: the summary checked below says so.
"""

from __future__ import annotations

import logging
import re
import socket
import threading

import pytest

import lut_tvm
from lut_tvm import _tvm_compat
from lut_tvm.deploy import EMULATED_NOTE, DeviceError
from lut_tvm.errors import TargetError
from lut_tvm.targets import resolve_target
from lut_tvm.tuning import RemoteDevice, keys, logs
from lut_tvm.tuning.tune import count_records, format_summary, tune_model

pytestmark = [
    pytest.mark.filterwarnings("ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore:Renaming name:UserWarning"),
]

TRIALS = 2
TASK = ["lut_lookup_dense_shuffle"]  # the NEON tbl lookup of the dense LUT layer
# Two tasks: the scheduler measures one batch of each in turn, so a device killed after the
# first batch dies between two measurements.
TWO_TASKS = ["lut_lookup_dense_shuffle", "lut_encode_dense_rows"]
STEP = re.compile(r"\(step 'connect'\)|'(upload|load|copy|time|query)[^']*' (failed|did not finish)")
APPLIED = re.compile(r"applied tuning log (\S+) \((\d+) of (\d+) functions\)")


@pytest.fixture(scope="module")
def tracker_device(start_device):
    """An emulated device running its own TVM RPC tracker (any free ports), as
    ``lut-tvm device start --emulated --tracker`` starts it. The last test kills it."""
    return start_device(start_tracker=True, tracker_port=0, key="lut-tvm-test")


def _remote(device, **kwargs) -> RemoteDevice:
    return RemoteDevice(tracker=device.tracker, key=device.key, **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_remote_tune_log_is_applied_and_the_model_still_equals_numpy(
        digits, tracker_device, cross_linker, digits_codes, tmp_path, caplog):
    del cross_linker
    result = tune_model(digits.model, digits.plan, "arm64", TRIALS, log_dir=tmp_path,
                        example_inputs=(digits.x,), progress=False, task_filter=TASK,
                        remote=_remote(tracker_device))
    # The records sit where local tuning puts them, under the arm64 device folder.
    assert result.log_dir == keys.log_path(tmp_path, resolve_target("arm64"))
    assert result.log_dir.parent.name == "arm64"
    assert [task.kind for task in result.tasks] == ["lookup_dense_shuffle"]
    assert result.records == count_records(result.log_dir) == 1 + result.tasks[0].trials
    assert result.tasks[0].trials == TRIALS
    assert result.tasks[0].default_sec and result.tasks[0].tuned_sec
    assert result.emulated and tracker_device.tracker in result.device
    summary = format_summary(result)
    assert EMULATED_NOTE in summary and "not its speed" in summary
    print(summary)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lut_tvm"):
        tuned = lut_tvm.compile(digits.model, digits.plan, target="arm64",
                                example_inputs=(digits.x,), tuning_logs=tmp_path)
    match = APPLIED.search(caplog.text)
    assert match, caplog.text
    assert match.group(1) == str(result.log_dir) and int(match.group(2)) == 1
    lib = tuned.export(tmp_path / "tuned.so")
    assert lib.suffix == ".so", tuned.export_message
    with tracker_device.connect() as session:
        y = session.load_library(lib, tuned.info)(digits.x)
    digits.assert_matches(y, digits_codes)


def test_direct_rpc_measures_a_cross_built_candidate(arm64_device, cross_linker):
    """Without a tracker (``--rpc``): the runner's worker steps on the device's own server."""
    import tvm  # pylint: disable=import-outside-toplevel

    from lut_tvm.deploy.linker import plan_export  # pylint: disable=import-outside-toplevel
    from lut_tvm.tuning.measure import index_bounds  # pylint: disable=import-outside-toplevel
    from lut_tvm.tuning.worker_fns import export_shared, measure_on_device  # pylint: disable=import-outside-toplevel
    from schedules.lut_shuffle_compute import lookup_dense_shuffle_func  # pylint: disable=import-outside-toplevel

    del cross_linker
    target = resolve_target("arm64")
    remote = RemoteDevice(rpc=arm64_device.address)
    assert remote.probe(target)["emulated"]
    func = lookup_dense_shuffle_func(64, 8, 16, False).with_attr("global_symbol", "main")
    artifact = export_shared(plan_export(target).linker, tvm.compile(func, target).mod)
    ms = _tvm_compat.meta_schedule()
    args_info = [info.as_json() for info in ms.arg_info.ArgInfo.from_prim_func(func)]
    config = ms.runner.EvaluatorConfig(number=2, repeat=1, min_repeat_ms=0)
    status, secs = measure_on_device(remote.connect_kwargs(), index_bounds(func), config, 1,
                                     artifact, args_info)
    assert status == "ok" and len(secs) == 1 and secs[0] > 0


def test_dead_tracker_is_named_before_any_work(digits, tmp_path):
    port = _free_port()
    with pytest.raises(DeviceError, match=rf"tracker 127\.0\.0\.1:{port}: cannot connect"):
        tune_model(digits.model, digits.plan, "arm64", TRIALS, log_dir=tmp_path,
                   example_inputs=(digits.x,), progress=False,
                   remote=RemoteDevice(tracker=f"127.0.0.1:{port}", key="phone", connect_timeout=5))
    assert not any(tmp_path.iterdir())  # nothing written
    with pytest.raises(TargetError, match="--tracker HOST:PORT --key KEY"):
        tune_model(digits.model, digits.plan, "arm64", TRIALS, log_dir=tmp_path)


def test_cli_tune_and_device_start_take_the_remote_options():
    from lut_tvm.cli import build_parser  # pylint: disable=import-outside-toplevel
    from lut_tvm.cli.tune import _remote_device  # pylint: disable=import-outside-toplevel

    parser = build_parser()
    args = parser.parse_args(["tune", "m.pt2", "--target", "arm64", "--tracker", "127.0.0.1:9190",
                              "--key", "phone", "--run-timeout", "20"])
    assert _remote_device(args) == RemoteDevice(tracker="127.0.0.1:9190", key="phone",
                                                connect_timeout=30.0, run_timeout=20.0)
    assert _remote_device(parser.parse_args(["tune", "m.pt2"])) is None
    start = parser.parse_args(["device", "start", "--emulated", "--tracker"])
    assert start.tracker == "start" and start.tracker_port == 9190
    assert parser.parse_args(["device", "start", "--emulated", "--tracker", "h:1"]).tracker == "h:1"


def test_device_dying_mid_tune_names_host_and_step_and_keeps_records(
        digits, tracker_device, cross_linker, tmp_path):
    """Runs last: it kills the tracker device once the default schedules are recorded, so the
    tuning batches that follow find it dead (killing it from a batch callback races with the
    other task's batch, which may already be measured by then)."""
    del cross_linker
    folder = keys.log_path(tmp_path, resolve_target("arm64"))
    done = threading.Event()

    def kill_once_the_defaults_are_recorded():
        while not done.wait(0.05):
            if folder.is_dir() and count_records(folder) >= len(TWO_TASKS):
                tracker_device.stop(kill=True)
                return

    watcher = threading.Thread(target=kill_once_the_defaults_are_recorded, daemon=True)
    watcher.start()
    try:
        with pytest.raises(DeviceError) as err:
            tune_model(digits.model, digits.plan, "arm64", TRIALS, log_dir=tmp_path,
                       example_inputs=(digits.x,), progress=False, task_filter=TWO_TASKS,
                       remote=_remote(tracker_device, connect_timeout=10, run_timeout=20))
    finally:
        done.set()
        watcher.join()
    message = str(err.value)
    print(message)
    assert tracker_device.tracker in message
    # The step that failed: connecting, or one in flight when the device died.
    assert STEP.search(message), message
    # Both default schedules were measured and recorded before the device died.
    assert count_records(folder) >= len(TWO_TASKS)
    assert f"the {count_records(folder)} records measured before" in message
    assert f"records measured before are kept in {folder}" in message
    assert logs.corrupt_file(folder) is None
