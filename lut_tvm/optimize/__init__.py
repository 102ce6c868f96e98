"""lut_tvm.optimize: the fastest LUT plan within an accuracy budget (measured sensitivity, measured
kernel latency, a greedy search verified end to end, a report).

Names are imported on first use (``inputs`` stays importable without TVM, for the CLI's checks).
``lut_tvm.optimize`` is both this package and (lazily exported) its ``optimize`` function; the
package is callable, so ``lut_tvm.optimize(...)`` works whichever of the two was bound first.
"""

import sys
import types

from .._lazy import lazy_exports

_EXPORTS = {"optimize": "api", "OptimizeResult": "api", "write_report": "report"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


class _CallablePackage(types.ModuleType):
    """This package's type: calling it calls ``optimize``."""

    def __call__(self, *args, **kwargs):
        return self.optimize(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
