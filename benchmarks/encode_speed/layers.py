"""Whole LUT layers of unseen-style shapes against dense TVM: layer time and the encode's share.

Each layer is one torch module (3x3 convs with 24 / 48 / 96 channels, 1x1 convs, a Linear
100 -> 10) compiled untuned (default schedule rules, no tuning log) by ``compile_imported``
dense and with a one-layer plan at each V of ``LAYER_VS`` that divides its depth (K = 16,
centroids sampled from the layer's input rows: the kernels' time does not depend on their
values). The whole-layer times (TVM's ``time_evaluator`` of the VM's ``main``, the input
already on the device: calling ``main`` from Python adds ~0.2 ms) are interleaved round by
round; the encode and lookup times come from the VM's per-function profile
(``vm_kernel_times``) of the same compiled layers.
"""

from __future__ import annotations

import re
import statistics

import numpy as np
import torch

from benchmarks.common.timing import time_evaluator_median, vm_kernel_times
from lut_tvm import _tvm_compat
from lut_tvm.compiler import compile_imported, layer_sites
from lut_tvm.frontends import import_model
from lut_tvm.plan import LayerPlan, Plan
from lut_tvm.reference import im2col_nchw

LAYER_VS = (2, 4, 8, 9)
# (label, module factory, input shape)
LAYER_SHAPES = [
    ("conv3x3 24->24 @20x20", lambda: torch.nn.Conv2d(24, 24, 3, padding=1), (32, 24, 20, 20)),
    ("conv3x3 48->48 @10x10", lambda: torch.nn.Conv2d(48, 48, 3, padding=1), (32, 48, 10, 10)),
    ("conv3x3 96->96 @10x10", lambda: torch.nn.Conv2d(96, 96, 3, padding=1), (8, 96, 10, 10)),
    ("conv3x3 24->40 @20x20", lambda: torch.nn.Conv2d(24, 40, 3, padding=1), (8, 24, 20, 20)),
    ("conv1x1 48->96 @10x10", lambda: torch.nn.Conv2d(48, 96, 1), (32, 48, 10, 10)),
    ("conv1x1 96->24 @10x10", lambda: torch.nn.Conv2d(96, 24, 1), (32, 96, 10, 10)),
    ("dense 100->10, 32 rows", lambda: torch.nn.Linear(100, 10), (32, 100)),
]
K = 16
MIN_SAMPLE_S = 0.05


def _input_rows(module, x: np.ndarray) -> np.ndarray:
    """The rows ``[M, D]`` the layer's encode sees."""
    if isinstance(module, torch.nn.Conv2d):
        pad_h, pad_w = module.padding
        return im2col_nchw(x, module.kernel_size, module.stride, (pad_h, pad_w, pad_h, pad_w))[0]
    return x.reshape(-1, x.shape[-1])


def _plan(site, rows: np.ndarray, sub_len: int, seed: int) -> Plan:
    rng = np.random.default_rng(seed)
    picked = rows[rng.choice(len(rows), K, replace=False)]
    centroids = np.ascontiguousarray(picked.reshape(K, -1, sub_len).transpose(1, 0, 2), dtype=np.float32)
    return Plan([LayerPlan("layer", site.kind, tuple(site.weight.shape), site.fingerprint, centroids)])


def _kernel_share(compiled, args) -> tuple[float, float]:
    """``(encode ms, lookup ms)`` from the VM profile (0 where the model has no such kernel)."""
    times = vm_kernel_times(compiled.vm, args, 9)
    encode = sum(t for name, t in times.items() if name.startswith("lut_encode"))
    lookup = sum(t for name, t in times.items() if name.startswith("lut_lookup"))
    return encode, lookup


def layer_table(target, rounds: int) -> list[str]:
    """Markdown rows: per layer shape and V, dense / LUT ms, encode / lookup ms and share."""
    lines = [
        "| layer | input | V | C | dense TVM ms | LUT ms | dense / LUT | encode ms | lookup ms | "
        "encode share | encode GFLOP/s | kernels |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, factory, shape in LAYER_SHAPES:
        torch.manual_seed(0)
        module = factory().eval()
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        imported = import_model(module, (x,))
        site = layer_sites(imported)[0]
        rows = _input_rows(module, x)
        models = {"dense": compile_imported(imported, None, target)}
        for sub_len in LAYER_VS:
            if rows.shape[1] % sub_len == 0:
                models[sub_len] = compile_imported(imported, _plan(site, rows, sub_len, sub_len), target)
        args = [_tvm_compat.to_device(x)]
        number = {name: max(1, int(MIN_SAMPLE_S / time_evaluator_median(m.vm, args, 1, 3)))
                  for name, m in models.items()}
        samples = {name: [] for name in models}
        for _ in range(rounds):
            for name, compiled in models.items():
                samples[name].append(time_evaluator_median(compiled.vm, args, number[name], 1))
        med = {name: statistics.median(s) * 1e3 for name, s in samples.items()}
        for sub_len in (v for v in LAYER_VS if v in models):
            encode, lookup = _kernel_share(models[sub_len], args)
            kernels = sorted({name.rstrip("0123456789") for name in _kernel_names(models[sub_len])})
            lines.append(
                f"| {label} | {list(shape)} | {sub_len} | {rows.shape[1] // sub_len} | {med['dense']:.3f} | "
                f"{med[sub_len]:.3f} | {med['dense'] / med[sub_len]:.1f}x | {encode:.3f} | {lookup:.3f} | "
                f"{encode / max(encode + lookup, 1e-12):.0%} | "
                f"{2 * rows.size * K / max(encode, 1e-12) / 1e6:.0f} | {', '.join(kernels)} |"
            )
            print(lines[-1], flush=True)
    return lines


def _kernel_names(compiled) -> set[str]:
    """The LUT kernels the compiled model calls."""
    return set(re.findall(r"lut_(?:encode|lookup)_\w+", compiled.executable.as_text()))
