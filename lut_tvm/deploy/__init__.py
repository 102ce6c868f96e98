"""Deploying compiled models to ARM devices over TVM RPC.

* ``connect("HOST:PORT")`` / ``connect(tracker="HOST:PORT", key=KEY)`` -> ``RemoteSession``;
  ``compiled.deploy(session)`` (or ``session.load(compiled)``) -> ``RemoteModel``, called with
  NumPy arrays; ``RemoteModel.benchmark`` times it there with TVM's time evaluator.
* ``linker``: which cross linker writes the ``.so`` for arm64 / android-arm64, or a ``.tar``.
* ``emulated``: an emulated ARM64 device (qemu-aarch64 + an arm64 Debian sysroot) on loopback,
  optionally running its own RPC tracker for tuning (``lut_tvm.tuning.RemoteDevice``).

Names are imported on first use, so ``import lut_tvm.deploy`` does not import TVM.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "connect": "session",
    "parse_address": "session",
    "RemoteSession": "session",
    "RemoteModel": "session",
    "BenchResult": "session",
    "DeviceError": "defaults",
    "EMULATED_NOTE": "defaults",
    "plan_export": "linker",
    "ExportPlan": "linker",
    "Linker": "linker",
    "EmulatedDevice": "emulated",
    "ProvisionError": "emulated",
    "start_emulated": "emulated",
    "stop_emulated": "emulated",
    "provision": "emulated",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
