"""Time one framework on one case folder, in its own process, one thread; prints one JSON line.

    python -m benchmarks.tmac_speed.worker FOLDER FRAMEWORK

``tmac``: our exported kernel (TVM runtime), its output compared with ``expected.npy`` bit for
bit (``exact``) before timing; a peer: its ONNX file in an ONNX Runtime session
(``intra_op_num_threads`` 1), its largest relative error against the float layer reported.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ["TVM_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402

from benchmarks.common.timing import calibrated_median, calls_per_sample  # noqa: E402

MIN_SECONDS = 1.0  # per framework: 7 samples of about 0.14 s each
REPEAT = 7


def cpu_median_us(fn) -> float:
    """Median over ``REPEAT`` samples of this thread's CPU time per call (microseconds): on a
    shared, overloaded machine the wall clock also counts the time other processes ran."""
    calls = calls_per_sample(fn, MIN_SECONDS / REPEAT)
    samples = []
    for _ in range(REPEAT):
        start = time.thread_time()
        for _ in range(calls):
            fn()
        samples.append((time.thread_time() - start) / calls * 1e6)
    return float(np.median(samples))


def timings(fn) -> dict:
    """``{"us": wall median, "cpu_us": CPU-time median}`` of ``fn``, microseconds per call."""
    return {"us": calibrated_median(fn, MIN_SECONDS) * 1e6, "cpu_us": cpu_median_us(fn)}


def _tmac(folder: Path, meta: dict, example: np.ndarray) -> dict:
    import tvm  # pylint: disable=import-outside-toplevel

    lib = tvm.runtime.load_module(str(folder / meta["tmac"]["library"]))
    inputs = np.load(folder / "tmac_inputs.npz")
    rows, cols = example.shape[0], meta["case"]["cols"]
    args = [tvm.runtime.tensor(a) for a in (example, inputs["nibbles"], inputs["out_scale"], inputs["bias_q"])]
    out = tvm.runtime.tensor(np.zeros((rows, cols), np.float32))
    main = lib["main"]
    main(*args, out)
    got = out.numpy()
    expected = np.load(folder / "expected.npy")
    return {**timings(lambda: main(*args, out)), "exact": bool(np.array_equal(got, expected)),
            "max_abs_diff": float(np.abs(got - expected).max())}


def _peer(folder: Path, meta: dict, framework: str, example: np.ndarray) -> dict:
    from lut_tvm.peers import ort_runner  # pylint: disable=import-outside-toplevel

    source = meta["peers"][framework]
    if source.startswith("not built"):
        return {"skipped": source}
    run = ort_runner(folder / source, example, threads=1)
    got = np.asarray(run()[0])
    expected = np.load(folder / "expected.npy")
    error = float(np.abs(got - expected).max() / max(float(np.abs(expected).max()), 1e-30))
    return {**timings(run), "rel_error_vs_int_reference": error}


def main(argv=None) -> int:
    folder, framework = (argv or sys.argv[1:])[:2]
    folder = Path(folder)
    meta = json.loads((folder / "case.json").read_text())
    example = np.load(folder / "x.npy")
    try:
        row = _tmac(folder, meta, example) if framework == "tmac" else _peer(folder, meta, framework, example)
    except Exception as err:  # pylint: disable=broad-except
        from lut_tvm.peers import failure_text  # pylint: disable=import-outside-toplevel

        row = {"skipped": f"not measured: {failure_text(err)}"}
    print(json.dumps({"framework": framework, **row}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
