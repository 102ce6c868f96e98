"""Tuning on a remote device over TVM RPC: candidates cross-built here, timed on the device.

``RemoteDevice`` says where the device is: ``tracker="HOST:PORT", key=KEY`` (MetaSchedule's
usual setup) or ``rpc="HOST:PORT"`` (a server without a tracker: each measurement connects to
it directly). ``remote_measurers`` makes the builder (``LutBuilder`` exporting a shared library
linked by ``lut_tvm.deploy.linker``, e.g. aarch64-linux-gnu-g++) and ``LutRpcRunner``:
MetaSchedule's RPCRunner whose worker runs the same steps as upstream's (connect, upload,
``load_module``, allocate, time evaluator) through ``lut_tvm.deploy``'s session, so each step
has a timeout and a failure names the device and the step. Inputs are made on this machine by
the code-safe allocator (codes in ``[0, K)``) and copied to the device.

When a measurement loses the connection or times out, ``DeviceWatch`` connects once more: if the
device does not answer, tuning stops after the batch in flight and ``tune_model`` raises a
``DeviceError`` naming the device and the failed step (the records measured so far stay in the
log, which is appended as they are measured).
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
from dataclasses import dataclass

from tvm.ir.utils import derived_object

from .. import _tvm_compat
from ..deploy.defaults import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MEASURE_TIMEOUT, DeviceError
from ..errors import TargetError
from .measure import LutBuilder, args_key, make_builder, wait_or_stop, worker_pool
from .stopping import STOPPED, TuneStatus
from .worker_fns import export_shared, measure_on_device, warm_up

ms = _tvm_compat.meta_schedule()
LOG = logging.getLogger("lut_tvm.tuning")


@dataclass
class RemoteDevice:
    """Where tuning measures: a tracker and key, or one RPC server (``HOST:PORT``)."""

    rpc: str | None = None
    tracker: str | None = None
    key: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    run_timeout: float = DEFAULT_MEASURE_TIMEOUT  # each upload / load / copy / time step

    @property
    def name(self) -> str:
        """``KEY@HOST:PORT`` of the tracker, or the server's ``HOST:PORT``."""
        return f"{self.key}@{self.tracker}" if self.tracker else str(self.rpc)

    def connect_kwargs(self) -> dict:
        """``lut_tvm.deploy.connect`` arguments; the server ends a session stuck past its steps."""
        return dict(rpc=self.rpc, tracker=self.tracker, key=self.key,
                    connect_timeout=self.connect_timeout, run_timeout=self.run_timeout,
                    session_timeout=int(self.connect_timeout + 5 * self.run_timeout))

    def measure_budget(self) -> float:
        """Seconds after which a measurement's worker is killed: its steps' own timeouts (connect,
        device info, upload, load, copy, time) plus slack; only a wedged worker gets there."""
        return self.connect_timeout * 2 + self.run_timeout * 5 + 10

    def probe(self, tvm_target) -> dict:
        """Connect once (DeviceError naming the tracker/host when it cannot) and check that the
        device's CPU fits ``tvm_target``; returns ``{"describe", "emulated", "info"}``."""
        from ..deploy.session import connect  # pylint: disable=import-outside-toplevel
        from ..deploy.linker import target_triple  # pylint: disable=import-outside-toplevel

        with connect(**self.connect_kwargs()) as session:
            info, describe, emulated = session.info or {}, session.describe(), session.emulated
        machine = str(info.get("machine", ""))
        arch = target_triple(tvm_target).split("-", 1)[0]
        if machine and arch and machine != arch:
            raise TargetError(f"device {describe} is {machine}, but the target is {arch} "
                              f"({target_triple(tvm_target)}): tune with a target for the device")
        return {"describe": describe, "emulated": emulated, "info": info}


def device_target(tvm_target, probe: dict, fallback_cores: int = 4):
    """``tvm_target`` with the device's core count from ``probe`` (MetaSchedule sizes parallel
    loops by it; it is not part of the log's key). A server that does not report it (a stock
    TVM RPC app) gets the target's own ``num-cores``, else ``fallback_cores``."""
    cores = probe["info"].get("cpu_count")
    spec = dict(tvm_target.export())
    if not cores and "num-cores" in spec:
        return tvm_target
    if not cores:
        LOG.warning("device %s does not report its cores: tuning assumes %d", probe["describe"],
                    fallback_cores)
    spec["num-cores"] = int(cores or fallback_cores)
    return _tvm_compat.make_target(spec)


class DeviceWatch:
    """Decides whether a failed measurement means the device is gone, and then stops tuning."""

    def __init__(self, remote: RemoteDevice, stop):
        self.remote = remote
        self.stop = stop
        self.failure: DeviceError | None = None
        self.pending: list[concurrent.futures.Future] = []

    def check(self, message: str) -> None:
        """After ``message`` (a lost connection or a timeout): connect once; if that fails too,
        record the failure, cancel the queued measurements and ask the scheduler to stop."""
        if self.failure is not None:
            return
        from ..deploy.session import connect  # pylint: disable=import-outside-toplevel

        try:
            connect(**self.remote.connect_kwargs()).close()
            LOG.warning("%s; the device still answers: counted as a failed candidate", message)
            return
        except DeviceError as err:
            self.failure = DeviceError(f"tuning stopped: {message}; the device did not answer "
                                       f"afterwards ({err})")
        LOG.error("%s", self.failure)
        self.stop.requested = True
        for future in self.pending:
            future.cancel()


@derived_object
class RemoteRunnerFuture(ms.runner.PyRunnerFuture):
    """A measurement in the runner's worker; a lost device is reported to the ``DeviceWatch``."""

    def __init__(self, future: concurrent.futures.Future, watch: DeviceWatch, budget: float,
                 status: TuneStatus, kill):
        super().__init__()
        self.future = future
        self.watch = watch
        self.budget = budget
        self.status = status
        self.kill = kill

    def done(self) -> bool:
        return self.future.done() or self.status.stop.requested

    def result(self):
        RunnerResult = ms.runner.RunnerResult  # pylint: disable=invalid-name
        if not wait_or_stop([self.future], self.status, self.kill):
            return RunnerResult(None, STOPPED)
        self.status.advance(1)
        try:
            status, value = self.future.result()
        except concurrent.futures.CancelledError:
            return RunnerResult(None, "not measured: the device failed earlier in this batch")
        except TimeoutError:
            status, value = "lost", (f"device {self.watch.remote.name}: measuring a candidate did "
                                     f"not finish within {self.budget:g}s (its worker was killed)")
        except Exception as err:  # pylint: disable=broad-except
            return RunnerResult(None, f"LutRpcRunner: {type(err).__name__}: {err}")
        if status == "ok":
            return RunnerResult(value, None)
        if status == "lost":
            self.watch.check(value)
        return RunnerResult(None, value)


@derived_object
class LutRpcRunner(_tvm_compat.subclassable(ms.runner.RPCRunner)):
    """MetaSchedule's RPCRunner measuring through ``worker_fns.measure_on_device`` (see module)."""

    def __init__(self, bounds: dict[str, list], remote: RemoteDevice, watch: DeviceWatch,
                 evaluator_config, status: TuneStatus | None = None):
        self.bounds = bounds
        self.remote = remote
        self.watch = watch
        self.status = status or TuneStatus()
        from ..deploy.session import parse_address  # pylint: disable=import-outside-toplevel

        # RPCConfig wants a tracker; for a direct server it only carries the address (unused:
        # the worker connects with ``remote``).
        host, port = parse_address(remote.tracker or remote.rpc)
        config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port,
                                     tracker_key=remote.key or "",
                                     session_timeout_sec=int(remote.measure_budget()))
        super().__init__(rpc_config=config, evaluator_config=evaluator_config, max_workers=1)

    def _sanity_check(self) -> None:
        # Upstream's pool has no timeout: a hung device would hang tuning. Ours kills the worker
        # after the measurement budget; it imports TVM in the background meanwhile.
        self.pool = worker_pool(1, self.remote.measure_budget())
        self.pool.submit(warm_up)

    def kill(self) -> None:
        """Stop the worker process now."""
        self.pool.shutdown(wait=False)

    def run(self, runner_inputs):
        futures = []
        self.watch.pending = []
        for runner_input in runner_inputs:
            if self.status.stop.requested:
                futures.append(ms.runner.RunnerFuture(
                    lambda: True, lambda: ms.runner.RunnerResult(None, STOPPED)))
                continue
            if self.watch.failure is not None:
                futures.append(ms.runner.RunnerFuture(
                    lambda: True, lambda: ms.runner.RunnerResult(None, "not measured: device failed")))
                continue
            future = self.pool.submit(
                measure_on_device, self.remote.connect_kwargs(),
                self.bounds.get(args_key(runner_input.args_info)), self.evaluator_config,
                self.alloc_repeat, str(runner_input.artifact_path),
                tuple(info.as_json() for info in runner_input.args_info))
            self.watch.pending.append(future)
            futures.append(RemoteRunnerFuture(future, self.watch, self.remote.measure_budget(),
                                              self.status, self.kill))
        return futures


def remote_measurers(remote: RemoteDevice, tvm_target, bounds: dict[str, list],
                     status: TuneStatus, emulated: bool) -> tuple[LutBuilder, LutRpcRunner, DeviceWatch]:
    """The builder (shared libraries for the device) and runner (on the device) for tuning.

    Under emulation a run is slow and its absolute time meaningless: each candidate runs three
    times with no minimum duration (it still ranks candidates; it is not device performance).
    """
    from ..deploy.linker import plan_export  # pylint: disable=import-outside-toplevel

    plan = plan_export(tvm_target)
    if plan.kind != "so":
        raise TargetError(f"cannot tune remotely: the device loads shared libraries, and {plan.reason}")
    builder = make_builder(f_export=functools.partial(export_shared, plan.linker), status=status)
    watch = DeviceWatch(remote, status.stop)
    config = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=0 if emulated else 50,
                                       enable_cpu_cache_flush=False)
    return builder, LutRpcRunner(bounds, remote, watch, config, status), watch
