"""Accuracy of INT8 table scales per layer vs per output column, on the same LUT models.

    python -m benchmarks.table_scale_accuracy digits [--lutnn-epochs 5] [--seed 0]
    python -m benchmarks.table_scale_accuracy minilm [--sub-len 16] [--seed 0]

Centroids do not depend on the table scale granularity: each model is converted once (k-means,
``lut_tvm.train.convert``), then measured with every LUT layer's ``table_quant`` set to one
granularity and then the other (the hard forward, which the compiled kernels reproduce).

* ``digits``: ``lut_tvm.demo``'s CNN on scikit-learn's digits, default policy; test accuracy of
  k-means only (and each layer's relative error alone, as for ``minilm``), and after the LUT-NN
  recipe (``train_lutnn``) trained at each granularity.
* ``minilm``: all-MiniLM-L6-v2 on Debian fortunes (``benchmarks.accuracy.tasks.minilm``), every
  encoder Linear at V = ``--sub-len``, k-means only: mean cosine to the original embeddings and
  topic accuracy on the held-out texts; and each LUT layer alone on its real inputs (the first 32
  held-out texts through the original model): the relative error ``||LUT(x) - dense(x)|| /
  ||dense(x)||`` with INT8 tables per layer, per column, and with float tables (same codes).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lut_tvm import reference as ref  # noqa: E402
from lut_tvm.plan import TableQuant  # noqa: E402
from lut_tvm.policy import PlanPolicy  # noqa: E402
from lut_tvm.train import LutConfig, LutConv2d, convert, lut_layers, train_lutnn  # noqa: E402
from lut_tvm.train.recipes import accuracy  # noqa: E402

GRANULARITIES = (TableQuant.INT8_PER_LAYER, TableQuant.INT8_PER_COLUMN)


def set_table_quant(model, table_quant: TableQuant) -> None:
    for _, layer in lut_layers(model):
        layer.table_quant = table_quant


def digits(seed: int, lutnn_epochs: int) -> dict:
    from lut_tvm.demo import load_digits_split, train_digits_cnn  # pylint: disable=import-outside-toplevel

    x_train, x_test, y_train, y_test = load_digits_split(seed)
    teacher = train_digits_cnn(x_train, y_train, seed=seed)
    kmeans = convert(teacher, LutConfig(policy=PlanPolicy(seed=seed)), x_train).eval()
    result = {"original": accuracy(teacher, (x_test, y_test))}
    for quant in GRANULARITIES:
        set_table_quant(kmeans, quant)
        result[f"kmeans {quant.value}"] = accuracy(kmeans, (x_test, y_test))
    result["layer rel. error"] = layer_errors(kmeans, teacher, x_test)
    result["layer rel. error median"] = summarize(result["layer rel. error"])
    for quant in GRANULARITIES:
        learned = copy.deepcopy(kmeans)
        set_table_quant(learned, quant)
        train_lutnn(learned, teacher, (x_train, y_train), epochs=lutnn_epochs, seed=seed)
        result[f"lutnn {quant.value}"] = accuracy(learned, (x_test, y_test))
    return result


def minilm(seed: int, sub_len: int) -> dict:
    # pylint: disable=import-outside-toplevel
    from sklearn.linear_model import LogisticRegression

    from benchmarks.accuracy.data import load_fortunes
    from benchmarks.accuracy.tasks.minilm import (
        SentenceEncoder,
        TopicModel,
        embed,
        evaluate,
        load_minilm,
        pack,
    )

    train_texts, y_train, test_texts, y_test, _, _ = load_fortunes(seed=seed)
    bert, tokenizer, _ = load_minilm()
    x_train, x_test = pack(tokenizer, train_texts), pack(tokenizer, test_texts)
    encoder = SentenceEncoder(copy.deepcopy(bert)).eval()
    with torch.no_grad():
        train_emb = torch.cat([encoder(xb) for xb in torch.from_numpy(x_train).split(64)]).numpy()
    clf = LogisticRegression(C=10.0, max_iter=5000, random_state=seed).fit(train_emb, y_train)
    head = torch.nn.Linear(train_emb.shape[1], len(clf.classes_))
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(clf.coef_.astype(np.float32)))
        head.bias.copy_(torch.from_numpy(clf.intercept_.astype(np.float32)))
    original = TopicModel(encoder, head).eval()
    original_emb, logits = embed(original, x_test)
    result = {"original topic_acc": float((logits.argmax(1) == y_test).mean()), "sub_len": sub_len}
    config = LutConfig(policy=PlanPolicy(dense_sub_len=sub_len, seed=seed), calibration_samples=256)
    start = time.perf_counter()
    kmeans = convert(original, config, x_train).eval()
    result["kmeans seconds"] = time.perf_counter() - start
    for quant in GRANULARITIES:
        set_table_quant(kmeans, quant)
        result[f"kmeans {quant.value}"] = evaluate(kmeans, original_emb, x_test, y_test)
    result["layer rel. error"] = layer_errors(kmeans, original, x_test[:32])
    result["layer rel. error median"] = summarize(result["layer rel. error"])
    return result


def layer_errors(lut_model, original, x: np.ndarray) -> dict:
    """Per LUT layer, alone on its real inputs (those its dense layer sees in ``original`` on ``x``):
    the relative error ``||LUT(x) - dense(x)|| / ||dense(x)||`` with INT8 tables at each granularity
    and with the real-valued (float) tables, all with the same codes."""
    inputs = {}
    modules = {name: original.get_submodule(name) for name, _ in lut_layers(lut_model)}

    def hook(name):
        def record(_module, args, _out):
            inputs[name] = args[0].detach()
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    try:
        with torch.no_grad():
            original(torch.from_numpy(x))
    finally:
        for handle in handles:
            handle.remove()
    errors = {}
    with torch.no_grad():
        for name, layer in lut_layers(lut_model):
            exact = modules[name](inputs[name])
            row = {}
            for quant in GRANULARITIES:
                layer.table_quant = quant
                row[quant.value] = float((layer(inputs[name]) - exact).norm() / exact.norm())
            if isinstance(layer, LutConv2d):  # rows in (n, oh, ow) order, channels last
                rows = layer.rows(inputs[name])[0]
                flat_exact = exact.permute(0, 2, 3, 1).reshape(len(rows), -1)
            else:
                rows = inputs[name].reshape(-1, inputs[name].shape[-1])
                flat_exact = exact.reshape(len(rows), -1)
            rows, flat_exact = rows.double().numpy(), flat_exact.double().numpy()
            cents = layer.centroids.double().numpy()
            tables = ref.build_tables(cents, layer.weight_dn().double().numpy())
            codes = ref.encode(rows, cents)
            floats = tables[np.arange(len(cents))[None, :], codes].sum(1) + layer.bias.double().numpy()
            row["float_tables"] = float(np.linalg.norm(floats - flat_exact) / np.linalg.norm(flat_exact))
            errors[name] = row
    return errors


def summarize(errors: dict) -> dict:
    """Median over the layers of each column of ``layer_errors``."""
    columns = next(iter(errors.values())).keys()
    return {column: float(np.median([row[column] for row in errors.values()])) for column in columns}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.table_scale_accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("digits", "minilm"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lutnn-epochs", type=int, default=5)
    parser.add_argument("--sub-len", type=int, default=16)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.task == "digits":
        result = digits(args.seed, args.lutnn_epochs)
    else:
        result = minilm(args.seed, args.sub_len)
    print(json.dumps(result, indent=1))
    return result

