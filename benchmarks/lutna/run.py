"""LUT-NA table: float / int8 / exact-LUT / mixed precision at several sparsities, costs and speed.

    python -m benchmarks.lutna [--quick] [--archs vgg11 resnet18] [--seed 0] [--proof-samples N]

Data: OpenCV's digits.png (``benchmarks.accuracy.data``), the accuracy benchmark's 80/20
stratified split (4,000 train / 1,000 test); 500 of the training images are held out as the
validation split that the mixed-precision search measures on (never the test split), 256 other
training images calibrate the activation scales. Models: width-reduced VGG-11 and ResNet-18
(``models``), trained and pruned seeded by ``lut_tvm.exact.prune.lottery_ticket`` (weights
cached under ``~/.cache/lut_tvm/models``), BatchNorm folded before quantization. Writes
``benchmarks/results/lutna.md`` and ``.json`` (``--quick``: ``benchmarks/results/quick/``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.accuracy.common import seed_everything, weights_path  # noqa: E402
from benchmarks.accuracy.tasks.digits_png import shift_augment, split  # noqa: E402
from lut_tvm.exact.mixed_precision import CostTable, search_bits  # noqa: E402
from lut_tvm.exact.prune import LotteryConfig, lottery_ticket, weight_sparsity  # noqa: E402
from lut_tvm.exact.quantize import (Backend, QuantizedTorchModel, build_plan, calibrate_layers,  # noqa: E402
                                    predict)

from . import speed  # noqa: E402
from benchmarks.common.models import fold_batchnorm  # noqa: E402

from .models import ARCHS  # noqa: E402
from .report import write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
FULL = {"width": 8, "epochs": 10, "retrain_epochs": 4, "targets": (0.5, 0.8, 0.95), "rate": 0.8,
        "rewind_steps": 20, "batch_size": 128, "lr": 3e-3, "validation": 500, "calibration": 256,
        "train_limit": None, "test_limit": None, "proof_samples": 200, "speed_batch": 32,
        "speed_archs": ("vgg11", "resnet18")}
QUICK = {**FULL, "width": 4, "epochs": 1, "retrain_epochs": 1, "targets": (0.9,), "rewind_steps": 5,
         "validation": 100, "calibration": 64, "train_limit": 1000, "test_limit": 200, "proof_samples": 8,
         "speed_archs": ("vgg11",)}


def data_splits(settings: dict, seed: int):
    """``(train, validation, calibration, test)``: validation and calibration come from the train split."""
    from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel

    x_train, y_train, x_test, y_test, path = split(seed)
    x_fit, x_val, y_fit, y_val = train_test_split(x_train, y_train, test_size=settings["validation"],
                                                  random_state=seed, stratify=y_train)
    if settings["train_limit"]:
        x_fit, y_fit = x_fit[: settings["train_limit"]], y_fit[: settings["train_limit"]]
    if settings["test_limit"]:
        x_test, y_test = x_test[: settings["test_limit"]], y_test[: settings["test_limit"]]
    calibration = x_fit[np.random.default_rng(seed).permutation(len(x_fit))[: settings["calibration"]]]
    return (x_fit, y_fit), (x_val, y_val), calibration, (x_test, y_test), path


def tickets_path(arch: str, settings: dict, seed: int) -> Path:
    """Where the lottery-ticket run of ``arch`` with ``settings`` caches its weights."""
    keys = ("width", "epochs", "retrain_epochs", "targets", "rate", "rewind_steps", "batch_size", "lr",
            "validation", "train_limit")
    cache_key = {"bench": "lutna", "arch": arch, "seed": seed, **{k: settings[k] for k in keys}}
    return weights_path(f"lutna-{arch}", cache_key)


def load_tickets(arch: str, path: Path, width: int) -> dict:
    """``{sparsity: float model (BN not yet folded), eval mode}`` from the cache file at ``path``."""
    states = torch.load(path, map_location="cpu", weights_only=True)
    models = {}
    for level, state in states.items():
        model = ARCHS[arch](width)
        model.load_state_dict(state)
        models[float(level)] = model.eval()
    return models


def trained_tickets(arch: str, train, settings: dict, seed: int, log) -> tuple[dict, dict]:
    """``{sparsity: float model (BN not yet folded)}`` from the lottery ticket run, cached."""
    path = tickets_path(arch, settings, seed)
    build = lambda: ARCHS[arch](settings["width"])  # noqa: E731
    if path.is_file():
        models = load_tickets(arch, path, settings["width"])
        log(f"  {arch}: loaded cached weights {path}")
        return models, {"cached": True, "path": str(path)}
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    config = LotteryConfig(targets=settings["targets"], rate=settings["rate"], scope="global",
                           rewind_steps=settings["rewind_steps"], epochs=settings["epochs"],
                           retrain_epochs=settings["retrain_epochs"], lr=settings["lr"],
                           batch_size=settings["batch_size"], seed=seed)
    start = time.perf_counter()
    result = lottery_ticket(build(), train, config, augment=lambda x: shift_augment(x, generator), log=log)
    models = {0.0: result.dense, **result.pruned}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({str(k): m.state_dict() for k, m in models.items()}, tmp)
    os.replace(tmp, path)
    seconds = time.perf_counter() - start
    log(f"  {arch}: trained and pruned in {seconds:.0f} s (cached at {path})")
    return models, {"cached": False, "seconds": round(seconds, 1), "path": str(path)}


def accuracy_of(model, data) -> float:
    return float((predict(model, data[0]).argmax(-1) == data[1]).mean())


def cost_summary(costs: CostTable, bits: dict) -> dict:
    """The cost report's model totals and ratios (``ModelCost.summary``) for ``bits``."""
    return costs.model(bits).summary()


def lut_proof(model, plan, test, samples: int) -> dict:
    """Logits of the NumPy exact-LUT reference vs the int8 fake-quant model, bit for bit."""
    x = test[0][:samples]
    fake = predict(QuantizedTorchModel(model, plan), x)
    lut = predict(QuantizedTorchModel(model, plan, Backend.REFERENCE_LUT), x, batch_size=25)
    return {"samples": int(len(x)), "bit_exact": bool(np.array_equal(fake, lut)),
            "max_abs_diff": float(np.abs(fake - lut).max()),
            "accuracy_lut": float((lut.argmax(-1) == test[1][: len(x)]).mean()),
            "accuracy_fake_quant": float((fake.argmax(-1) == test[1][: len(x)]).mean())}


def run_variant(arch, level, model, splits, settings, seed, log, with_speed: bool) -> dict:
    train, validation, calibration, test, _ = splits
    start = time.perf_counter()
    folded = fold_batchnorm(model)
    layers = calibrate_layers(folded, calibration, seed=seed)
    costs = CostTable(layers)
    int8_bits = {layer.name: 8 for layer in layers}
    int8_plan = build_plan(layers, int8_bits)
    row = {"sparsity_target": level, "sparsity": weight_sparsity(folded),
           "float_acc": accuracy_of(folded, test), "float_val_acc": accuracy_of(folded, validation)}
    row["int8_acc"] = accuracy_of(QuantizedTorchModel(folded, int8_plan), test)
    row["int8_cost"] = cost_summary(costs, int8_bits)
    search = search_bits(folded, calibration, validation, bound=settings["bound"], layers=layers, seed=seed)
    row["mixed"] = {"bits": search.bits, "acc": accuracy_of(QuantizedTorchModel(folded, search.plan), test),
                    "val_acc": search.accuracy, "float_val_acc": search.float_accuracy, "met": search.met,
                    "evaluations": search.evaluations, "cost": cost_summary(costs, search.bits),
                    "mean_bits": float(np.mean(list(search.bits.values())))}
    log(f"  {arch} sparsity {row['sparsity']:.0%}: float {row['float_acc']:.2%}, int8 {row['int8_acc']:.2%}, "
        f"mixed {row['mixed']['acc']:.2%} (mean {row['mixed']['mean_bits']:.2f} bits), energy vs trad LUT "
        f"{row['int8_cost']['energy_ratio_trad']:.1f}x / {row['mixed']['cost']['energy_ratio_trad']:.1f}x "
        f"({time.perf_counter() - start:.0f} s)")
    if settings["proof_samples"]:
        row["lut_proof_int8"] = lut_proof(folded, int8_plan, test, settings["proof_samples"])
        row["lut_proof_mixed"] = lut_proof(folded, search.plan, test, settings["proof_samples"])
        log(f"    exact LUT == int8 fake-quant on {row['lut_proof_int8']['samples']} test images: "
            f"{row['lut_proof_int8']['bit_exact']} (int8), {row['lut_proof_mixed']['bit_exact']} (mixed)")
    if with_speed:
        batch = test[0][: settings["speed_batch"]]
        expected = predict(QuantizedTorchModel(folded, int8_plan), batch)
        row["speed"] = speed.measure(folded, int8_plan, calibration, batch, expected)
        log(f"    speed: {json.dumps({k: v for k, v in row['speed'].items()}, default=str)[:300]}")
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lutna", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (~2 min): numbers mean nothing")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--proof-samples", type=int, default=None,
                        help="test images run through the NumPy exact-LUT reference (default 200; quick 16)")
    parser.add_argument("--bound", type=float, default=0.5,
                        help="mixed-precision accuracy bound in points under float, on the validation "
                             "split (default 0.5: half the 1-point goal on test, a margin for the "
                             "500-image split's noise and the search's selection among ~100 configs)")
    parser.add_argument("--speed-archs", nargs="*", default=None, choices=list(ARCHS),
                        help="models whose compiled speed is measured (default: all; quick: vgg11)")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = dict(QUICK if args.quick else FULL)
    settings["bound"] = args.bound
    if args.speed_archs is not None:
        settings["speed_archs"] = tuple(args.speed_archs)
    if args.proof_samples is not None:
        settings["proof_samples"] = args.proof_samples
    out_dir = args.out_dir or (RESULTS / "quick" if args.quick else RESULTS)
    splits = data_splits(settings, args.seed)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    log(f"[lutna] {len(splits[0][0])} train / {len(splits[1][0])} validation / {len(splits[3][0])} test "
        f"images from {splits[4]}")
    start = time.perf_counter()
    results = {"settings": {**settings, "targets": list(settings["targets"]),
                            "speed_archs": list(settings["speed_archs"])}, "seed": args.seed,
               "data": str(splits[4]), "quick": args.quick, "models": {}}
    for arch in args.archs:
        models, training = trained_tickets(arch, splits[0], settings, args.seed, log)
        rows = [run_variant(arch, level, models[level], splits, settings, args.seed, log,
                            with_speed=(level == 0.0 and arch in settings["speed_archs"]))
                for level in sorted(models)]
        results["models"][arch] = {"training": training, "rows": rows, "width": settings["width"]}
    results["seconds"] = round(time.perf_counter() - start, 1)
    for path in write_results(results, out_dir):
        log(f"wrote {path}")
    return 0

