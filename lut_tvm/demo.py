"""The bundled demo: a wide CNN on scikit-learn's digits, planned by ``optimize`` within 1 point of
accuracy, compiled dense and LUT; accuracy and speed against PyTorch, and demo_out/summary.json."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from . import _tvm_compat
from .compiler import compile as compile_model
from .files import write_json_atomic
from .steps import Progress

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


def wide_digits_cnn():
    """The demo's CNN, wide enough that table lookup pays: conv32, conv64, pool, conv128, pool, fc512, fc10."""
    from torch import nn  # pylint: disable=import-outside-toplevel

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 2 * 2, 512), nn.ReLU(), nn.Linear(512, 10),
    )


def train_digits_cnn(x_train, y_train, seed: int = 0, epochs: int = 15, make=digits_cnn):
    """Train ``make()`` (default ``digits_cnn``) with Adam, seeded; returns the model in eval mode."""
    import torch  # pylint: disable=import-outside-toplevel

    torch.manual_seed(seed)
    model = make()
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


def _interleaved_medians(timers: dict, rounds: int = 9) -> dict:
    """Median seconds per timer over ``rounds`` round-robin rounds, so that every row sees the same
    machine load (on a shared machine, timing one row after another mostly measures the load)."""
    samples = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            samples[name].append(timer())
    return {name: float(np.median(values)) for name, values in samples.items()}


def _split_validation(x_train, y_train, seed: int):
    """Hold out 30% of the training split (stratified) as the data ``optimize`` chooses the plan on."""
    from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel

    return train_test_split(x_train, y_train, test_size=0.3, random_state=seed, stratify=y_train)


def run_demo(out_dir: Path = Path("demo_out"), threads: int | None = None, seed: int = 0, *,
             budget: float = 1.0, epochs: int = 15, sub_lens=(4, 8, 9, 16, 32), timing_repeat: int = 5,
             finetune: int = 2) -> dict:
    """Train the wide digits CNN, plan it with ``optimize`` within ``budget`` points of accuracy on a
    validation split (then ``finetune`` epochs of LUT-NN training of the chosen plan, kept if no
    worse), compile dense and LUT, and compare accuracy (test split) and median latency against
    PyTorch at the same thread count. Writes the plan, the LUT library, the optimize report and
    ``summary.json``; returns the summary."""
    import torch  # pylint: disable=import-outside-toplevel

    from .optimizer import optimize  # pylint: disable=import-outside-toplevel

    threads = threads or os.cpu_count()
    torch.set_num_threads(threads)
    _tvm_compat.set_num_threads(threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    steps = Progress()
    with steps.step("loading scikit-learn's digits"):
        x_train, x_test, y_train, y_test = load_digits_split(seed)
        x_fit, x_val, y_fit, y_val = _split_validation(x_train, y_train, seed)
    model = train_digits_cnn(x_fit, y_fit, seed, epochs, make=wide_digits_cnn)
    example = (x_test[:EVAL_BATCH],)

    with steps.step(f"optimize: the fastest LUT plan within {budget} point(s) of accuracy"):
        result = optimize(model, x_fit, x_val, y_val, budget=budget, batch=EVAL_BATCH, sub_lens=sub_lens,
                          cache_dir=out_dir / "optimize_cache", timing_repeat=timing_repeat, seed=seed,
                          finetune=finetune, finetune_data=(x_fit, y_fit))
        result.save(out_dir / "digits_plan.npz", out_dir / "optimize_report")
    plan = result.plan
    with steps.step("compiling the dense model with TVM"):
        dense = compile_model(model, None, example_inputs=example)
    with steps.step("compiling the LUT model with TVM"):
        lut = compile_model(result.model, plan, example_inputs=example)
        lut.export(out_dir / "digits_lut.so")

    with torch.no_grad(), steps.step("measuring accuracy and latency"):
        def torch_predict(x):
            return model(torch.from_numpy(x)).numpy()

        timers = {"original (PyTorch)": lambda: _median_seconds(torch_predict, example[0], repeat=10),
                  "dense TVM": lambda: dense.benchmark(example[0], number=10, repeat=1),
                  "LUT TVM": lambda: lut.benchmark(example[0], number=10, repeat=1)}
        latency = _interleaved_medians(timers)
        rows = {name: (_accuracy(predict, x_test, y_test), latency[name])
                for name, predict in zip(timers, (torch_predict, dense, lut))}
    summary = {
        "model": "wide digits CNN: conv32, conv64, pool, conv128, pool, fc512, fc10",
        "threads": threads, "batch": EVAL_BATCH, "test_samples": int(len(x_test)),
        "budget_points": budget, "validation_samples": int(len(x_val)),
        "lut_layers": {layer.name: {"V": layer.sub_vector_len, "K": layer.num_centroids}
                       for layer in plan.layers if not layer.is_int8},
        "int8_layers": [layer.name for layer in plan.layers if layer.is_int8],
        "optimize": {"finetune": result.report["finetune"],
                     "validation_accuracy_original": result.report["original_metric"],
                     "validation_accuracy_lut": result.report["chosen_metric_compiled"],
                     "predicted_ms": result.report["latency_ms"]["predicted"],
                     "measured_ms": result.report["latency_ms"]["measured"]},
        "rows": [{"name": name, "accuracy": acc * 100, "latency_ms": seconds * 1e3}
                 for name, (acc, seconds) in rows.items()],
    }
    write_json_atomic(out_dir / "summary.json", summary)

    print("\nLUT layers chosen by optimize (K=16, budget "
          f"{budget} point on {len(x_val)} validation digits): "
          + (", ".join(f"{name} (V={v['V']})" for name, v in summary["lut_layers"].items()) or "none")
          + "".join(f", {name} (int8)" for name in summary["int8_layers"]))
    print(f"test set: {len(x_test)} digits; batch {EVAL_BATCH}; {threads} thread(s); median latency")
    print(f"{'':<20}{'accuracy':>10}{'latency ms':>12}{'vs PyTorch':>12}")
    base = summary["rows"][0]["latency_ms"]
    for row in summary["rows"]:
        print(f"{row['name']:<20}{row['accuracy']:>9.2f}%{row['latency_ms']:>12.3f}"
              f"{base / row['latency_ms']:>11.2f}x")
    print(f"\nwrote {out_dir / 'summary.json'}, {out_dir / 'digits_plan.npz'}, {out_dir / 'digits_lut.so'} "
          f"and {out_dir / 'optimize_report'}/")
    return summary
