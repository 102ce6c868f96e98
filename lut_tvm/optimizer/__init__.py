"""lut_tvm.optimizer: the fastest LUT plan within an accuracy budget (measured sensitivity, measured
kernel latency, a greedy search verified end to end, a report). ``lut_tvm.optimize`` is its
``optimize`` function.

Names are imported on first use (``inputs`` stays importable without TVM, for the CLI's checks).
"""

from .._lazy import lazy_exports

_EXPORTS = {"optimize": "api", "OptimizeResult": "api", "write_report": "report"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
