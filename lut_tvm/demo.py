"""The bundled demo: a small CNN on scikit-learn's digits, k-means LUT plan, accuracy and speed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from . import _tvm_compat
from .compiler import compile as compile_model
from .planner import PlanPolicy, build_kmeans_plan
from .tuning.stages import Progress

EVAL_BATCH = 72


def load_digits_split(seed: int = 0):
    """scikit-learn's 1,797 8x8 digits as NCHW float32 in [0, 1], split 80/20 (stratified, seeded)."""
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
    from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    return train_test_split(images, digits.target, test_size=0.2, random_state=seed,
                            stratify=digits.target)


def digits_cnn():
    """A small CNN for 8x8 digits: conv16, conv32, pool, conv32, fc64, fc10."""
    from torch import nn  # pylint: disable=import-outside-toplevel

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def train_digits_cnn(x_train, y_train, seed: int = 0, epochs: int = 15):
    """Train ``digits_cnn`` with Adam, seeded; returns the model in eval mode."""
    import torch  # pylint: disable=import-outside-toplevel

    torch.manual_seed(seed)
    model = digits_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = torch.utils.data.TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train))
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    with Progress().counter("training the digits CNN", epochs, "epoch") as count:
        for _ in range(epochs):
            for xb, yb in loader:
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
                loss.backward()
                opt.step()
            count.status(f"loss {loss.item():.3f}")
            count.update(1)
    return model.eval()


def _accuracy(predict, x_test, y_test) -> float:
    correct = 0
    for start in range(0, len(x_test), EVAL_BATCH):
        logits = predict(x_test[start : start + EVAL_BATCH])
        correct += int((logits.argmax(-1) == y_test[start : start + EVAL_BATCH]).sum())
    return correct / len(x_test)


def _median_seconds(fn, arg, repeat: int = 30) -> float:
    fn(arg)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_demo(out_dir: Path = Path("demo_out"), threads: int | None = None, seed: int = 0) -> dict:
    """Train, plan, compile dense and LUT, print accuracy and latency; returns the numbers."""
    import torch  # pylint: disable=import-outside-toplevel

    threads = threads or os.cpu_count()
    torch.set_num_threads(threads)
    _tvm_compat.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)

    steps = Progress()
    with steps.step("loading scikit-learn's digits"):
        x_train, x_test, y_train, y_test = load_digits_split(seed)
    model = train_digits_cnn(x_train, y_train, seed)
    example = (x_test[:EVAL_BATCH],)

    with steps.step("building the k-means LUT plan"):
        plan = build_kmeans_plan(model, x_train, PlanPolicy(seed=seed), example_inputs=example)
        plan.save(out_dir / "digits_plan.npz")
    with steps.step("compiling the dense model with TVM"):
        dense = compile_model(model, None, example_inputs=example)
    with steps.step("compiling the LUT model with TVM"):
        lut = compile_model(model, plan, example_inputs=example)
        lut.export(out_dir / "digits_lut.so")

    with torch.no_grad(), steps.step("measuring accuracy and latency"):
        def torch_predict(x):
            return model(torch.from_numpy(x)).numpy()

        results = {
            "accuracy": {
                "pytorch": _accuracy(torch_predict, x_test, y_test),
                "tvm_dense": _accuracy(dense, x_test, y_test),
                "tvm_lut": _accuracy(lut, x_test, y_test),
            },
            "latency_ms": {
                "pytorch": _median_seconds(torch_predict, example[0]) * 1e3,
                "tvm_dense": dense.benchmark(example[0]) * 1e3,
                "tvm_lut": lut.benchmark(example[0]) * 1e3,
            },
        }
    print(f"\nLUT layers (k-means plan, K=16): "
          + ", ".join(f"{l.name} (V={l.sub_vector_len})" for l in plan.layers))
    print(f"test set: {len(x_test)} digits; batch {EVAL_BATCH}; {threads} thread(s); median latency")
    print(f"{'':<12}{'accuracy':>10}{'latency ms':>12}{'vs PyTorch':>12}")
    base = results["latency_ms"]["pytorch"]
    for name in ("pytorch", "tvm_dense", "tvm_lut"):
        lat = results["latency_ms"][name]
        print(f"{name:<12}{results['accuracy'][name]:>10.2%}{lat:>12.3f}{base / lat:>11.2f}x")
    print(f"\nwrote {out_dir / 'digits_plan.npz'} and {out_dir / 'digits_lut.so'}")
    return results
