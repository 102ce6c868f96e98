"""Plan-file surgery for the plan format tests: read and rewrite a saved plan's metadata and arrays, and
check that loading the result is refused with a message that names what is wrong."""

import json

import numpy as np
import pytest

from lut_tvm.errors import PlanError
from lut_tvm.npz_meta import META_KEY
from lut_tvm.plan import Plan


def read_arrays(path) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def rewrite(path, change) -> None:
    """Apply ``change(meta, arrays)`` to the plan file at ``path`` in place."""
    arrays = read_arrays(path)
    meta = json.loads(arrays.pop(META_KEY).tobytes().decode())
    change(meta, arrays)
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def assert_load_refused(plan: Plan, tmp_path, change, message: str) -> None:
    """``plan`` saved, rewritten by ``change(meta, arrays)``, then refused on load with ``message``."""
    path = plan.save(tmp_path / "p.npz")
    rewrite(path, change)
    with pytest.raises(PlanError, match=message):
        Plan.load(path)
