"""Kernel cases: one layer of each shape (``shapes``) compiled alone, LUT plan by k-means on random rows.

The plan covers the one layer with LUT-NN's default V for its kind (``PlanPolicy``: 16 dense,
9 for 3x3, 4 for 1x1) and K = 16: the centroids are ``lut_tvm.kmeans.kmeans_centroids`` of the
layer's (im2col'd, ``lut_tvm.reference.im2col_nchw``) input rows, what ``build_kmeans_plan``
computes; for a one-layer model the layer's input is the model's, so the rows are taken here
without running the model through TVM (one compile less per case). Inputs and calibration
are seeded standard normal: speed does not depend on the values (the encode's argmin and the
lookups are branch-free).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.common.peers import failure_text
from .prepare import prepare_case
from .shapes import KernelCase

PLAN_ROWS = 512  # k-means rows per layer: enough for K = 16 centroids, quick for 512 codebooks
CALIBRATION_BATCHES = 2


def kernel_plan(case: KernelCase, model, calibration: np.ndarray):
    """A one-layer k-means plan for ``model.layer`` from the input rows of ``calibration``."""
    from lut_tvm import LayerKind, LayerPlan, Plan, PlanPolicy  # pylint: disable=import-outside-toplevel
    from lut_tvm.kmeans import kmeans_centroids  # pylint: disable=import-outside-toplevel
    from lut_tvm.reference import im2col_nchw  # pylint: disable=import-outside-toplevel
    from lut_tvm.weights import fingerprint  # pylint: disable=import-outside-toplevel

    policy = PlanPolicy(skip_first_conv=False, skip_last_dense=False, max_rows=PLAN_ROWS, seed=0)
    weight = model.layer.weight.detach().numpy()
    if case.is_conv:
        kind = LayerKind.CONV2D
        pad = (case.padding,) * 4
        rows, _ = im2col_nchw(calibration, (case.kernel,) * 2, (case.stride,) * 2, pad)
    else:
        kind, weight, rows = LayerKind.DENSE, np.ascontiguousarray(weight.T), calibration
    rng = np.random.default_rng(policy.seed)
    if len(rows) > policy.max_rows:
        rows = rows[rng.choice(len(rows), policy.max_rows, replace=False)]
    sub_len = policy.sub_len("layer", kind, weight.shape)
    centroids = kmeans_centroids(rows, sub_len, policy.num_centroids, policy.seed)
    layer = LayerPlan("layer", kind, tuple(weight.shape), fingerprint(weight), centroids)
    return Plan([layer], provenance={"method": "kmeans", "policy": policy.to_dict(), "samples": len(calibration),
                                     "model": f"benchmarks.speed kernel {case.key}"})


def lookups(case: KernelCase, sub_len: int) -> int:
    """Table reads of one run: ``M * N * C``."""
    return case.rows * case.out_ch * (case.depth // sub_len)


def prepare_kernel(case: KernelCase, folder: Path) -> dict:
    """Every framework's artifact for ``case`` in ``folder`` (see ``prepare.prepare_case``)."""
    rng = np.random.default_rng(0)
    model = case.build()
    example = rng.standard_normal(case.input_shape).astype(np.float32)
    extra = 4 if case.is_conv and case.batch == 1 else CALIBRATION_BATCHES  # >= 16 rows at 4x4
    calibration = rng.standard_normal((extra * case.batch, *case.input_shape[1:])).astype(np.float32)
    meta = {"kind": "kernel", "case": case.to_dict(), "flops": case.flops,
            "torch": {"builder": "kernel", "weights": "state_dict"}, "lookups": {}, "failed": {}}
    try:
        plan = kernel_plan(case, model, calibration)
    except Exception as err:  # pylint: disable=broad-except
        meta["failed"]["lut"] = f"k-means plan: {failure_text(err)}"
        return prepare_case(folder, model, example, {}, meta)
    if len(plan.layers) != 1:
        raise RuntimeError(f"kernel case {case.key}: the plan has {len(plan.layers)} layers, expected 1")
    sub_len = plan.layers[0].sub_vector_len
    meta["lookups"][f"V={sub_len}"] = lookups(case, sub_len)
    return prepare_case(folder, model, example, {f"V={sub_len}": plan}, meta)
