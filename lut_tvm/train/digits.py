"""Digits accuracy table: original vs k-means only (MADDNESS-style) vs each learning recipe.

``python -m lut_tvm.train.digits [--cnn-epochs 15] [--lutnn-epochs 5] [--recon-epochs 20]
[--fraction 0.05] [--seed 0] [--threads 1]`` trains ``lut_tvm.demo``'s digits CNN, converts it
with the default policy and prints test accuracy (all LUT layers in their hard, compiled form).
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from ..demo import load_digits_split, train_digits_cnn
from ..policy import PlanPolicy
from .convert import LutConfig, convert
from .recipes import accuracy, train_lutnn, train_reconstruction


def run(cnn_epochs=15, lutnn_epochs=5, recon_epochs=20, fraction=0.05, seed=0) -> dict:
    """Accuracies (and seconds) of the original, k-means, LUT-NN and reconstruction models."""
    x_train, x_test, y_train, y_test = load_digits_split(seed)
    test = (x_test, y_test)
    teacher = train_digits_cnn(x_train, y_train, seed=seed, epochs=cnn_epochs)
    config = LutConfig(policy=PlanPolicy(seed=seed))
    start = time.perf_counter()
    kmeans = convert(teacher, config, x_train)
    results = {"original": {"acc": accuracy(teacher, test)},
               "kmeans": {"acc": accuracy(kmeans, test), "seconds": time.perf_counter() - start}}
    recipes = {
        "lutnn": lambda m: train_lutnn(m, teacher, (x_train, y_train), epochs=lutnn_epochs, seed=seed),
        f"reconstruction_{fraction:g}": lambda m: train_reconstruction(
            m, teacher, (x_train, y_train), fraction=fraction, epochs=recon_epochs, seed=seed),
    }
    for name, train in recipes.items():
        model = copy.deepcopy(kmeans)
        start = time.perf_counter()
        train(model)
        results[name] = {"acc": accuracy(model, test), "seconds": time.perf_counter() - start}
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cnn-epochs", type=int, default=15)
    parser.add_argument("--lutnn-epochs", type=int, default=5)
    parser.add_argument("--recon-epochs", type=int, default=20)
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these sizes)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = run(args.cnn_epochs, args.lutnn_epochs, args.recon_epochs, args.fraction, args.seed)
    for name, entry in results.items():
        extra = f"  ({entry['seconds']:.1f} s)" if "seconds" in entry else ""
        print(f"{name:<22}{entry['acc']:>8.2%}{extra}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
