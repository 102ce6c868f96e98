"""all-MiniLM-L6-v2 through ``lut_tvm.optimize``: the fastest plan within mean cosine >= 0.95 (and within
1 point of topic accuracy), the cosine-latency frontier by number of LUT layers, eLUT-NN training of
the chosen plan, and the compiled whole model against ONNX Runtime fp32 / int8 at 1 thread.

    python -m benchmarks.accuracy.minilm_optimize [--quick] [--phases optimize accuracy frontier speed train]

Model: ``tasks.minilm.PooledEncoder`` (MiniLM + masked mean pooling + L2 norm, packed ``[1, 2, 64]``
input, batch 1); the topic run adds the task's frozen logistic-regression head (kept dense).
Calibration: train fortunes packed back to back into full 64-token sequences (no padding rows
for k-means). Eval: a topic-stratified third of the held-out fortunes. Every phase caches what it
computes (the optimizer's measurement cache, plans, trained checkpoints) under
``~/.cache/lut_tvm/minilm_optimize``; ``--phases`` picks what to (re)compute, the rest is carried
from the previous result file. Writes ``benchmarks/results/accuracy_minilm_optimize.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")  # the comparison is at 1 thread; set before TVM starts
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from lut_tvm.files import write_json_atomic, write_text_atomic  # noqa: E402
from lut_tvm.files import user_cache_dir  # noqa: E402

from .data import load_distillation_texts, load_fortunes  # noqa: E402
from .minilm_optimize_report import plot, render  # noqa: E402
from .tasks.minilm import (MAX_TOKENS, PooledEncoder, by_length, fit_topic_head, load_minilm, pack,  # noqa: E402
                           token_mask)

RESULTS = Path(__file__).resolve().parents[1] / "results"
NAME = "accuracy_minilm_optimize"
PHASES = ("optimize", "accuracy", "frontier", "speed", "train")
REPORT_ONLY = "report"  # --phases report: render the .md / .png again from the .json
FRONTIER_COUNTS = (1, 2, 3, 4, 6, 9, 12, 18, 24, 36)


def pack_dense(tokenizer, texts, count: int) -> np.ndarray:
    """``count`` packed ``[2, MAX_TOKENS]`` sequences of ``texts`` laid back to back ([CLS] ... [SEP],
    every position a real token: calibration rows without padding)."""
    ids = [i for row in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"] for i in row]
    width = MAX_TOKENS - 2
    if len(ids) < count * width:
        raise ValueError(f"pack_dense: {len(texts)} texts give {len(ids)} tokens, need {count * width}")
    seqs = [[tokenizer.cls_token_id, *ids[i * width:(i + 1) * width], tokenizer.sep_token_id] for i in range(count)]
    tokens = np.asarray(seqs, dtype=np.float32)
    return np.stack([tokens, np.ones_like(tokens)], 1)


class Setup:
    """The model, data and head every phase uses (built once, seeded)."""

    def __init__(self, seed: int, quick: bool, eval_every: int, calibration: int):
        torch.set_num_threads(1)
        train_texts, y_train, test_texts, y_test, topics, root = load_fortunes(seed=seed)
        bert, self.tokenizer, _ = load_minilm()
        self.encoder = PooledEncoder(copy.deepcopy(bert)).eval()
        self.x_train = pack(self.tokenizer, train_texts)
        self.head = fit_topic_head(self.encoder, self.x_train, y_train, len(topics), seed)
        pick = slice(None, None, eval_every * (4 if quick else 1))
        self.eval_texts = test_texts[pick]
        x_eval, y_eval = pack(self.tokenizer, self.eval_texts), np.asarray(y_test[pick], dtype=np.int64)
        order = np.argsort(-x_eval[:, 1].sum(1), kind="stable")  # longest first: little padding per chunk
        self.x_eval, self.y_eval = x_eval[order], y_eval[order]
        self.calibration = pack_dense(self.tokenizer, train_texts, 16 if quick else calibration)
        self.test_texts, self.seed, self.quick = test_texts, seed, quick
        self.names = [n for n, m in self.encoder.named_modules() if isinstance(m, nn.Linear)]
        self.data = (f"{root}: {len(topics)} topics; calibration {len(self.calibration)} sequences of "
                     f"{MAX_TOKENS} tokens packed from the {len(train_texts)} train fortunes; eval every "
                     f"{pick.step}th held-out fortune ({len(self.x_eval)} texts, topic-stratified), seed {seed}")
        with torch.no_grad():
            self.reference = self.encoder(torch.from_numpy(self.x_eval)).numpy()

    def topic_model(self) -> nn.Module:
        return nn.Sequential(self.encoder, self.head).eval()

    def measures(self, emb: np.ndarray) -> dict:
        """Mean / min cosine to the original embeddings and topic accuracy (frozen head) of ``emb``."""
        cos = (emb * self.reference).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(self.reference, axis=1))
        weight, bias = self.head.weight.detach().numpy(), self.head.bias.detach().numpy()
        topic = float(((emb @ weight.T + bias).argmax(1) == self.y_eval).mean() * 100)
        return {"cosine": float(cos.mean()), "cosine_min": float(cos.min()), "topic_acc": topic}


def run_optimize(setup: Setup, args, metric: str, cache: Path, log) -> tuple[dict, object]:
    """``lut_tvm.optimize`` of the encoder (cosine) or encoder + head (accuracy); returns (summary, result)."""
    import lut_tvm  # pylint: disable=import-outside-toplevel
    from lut_tvm.plan import TableQuant  # pylint: disable=import-outside-toplevel

    if metric == "cosine":
        model, layers, budget, eval_y = setup.encoder, setup.names, args.budget, None
    else:
        model, budget, eval_y = setup.topic_model(), args.accuracy_budget, setup.y_eval
        layers = [f"0.{n}" for n in setup.names]  # the head ("1") stays dense
    log(f"[optimize {metric}] budget {budget}, {len(layers)} layers, V in {args.sub_lens}")
    start = time.perf_counter()
    result = lut_tvm.optimize(model, setup.calibration, setup.x_eval, eval_y, budget=budget, metric=metric,
                              batch=1, layers=layers, sub_lens=args.sub_lens, cache_dir=cache / "measurements",
                              timing_number=args.timing_number, timing_repeat=5, seed=setup.seed,
                              table_quants=[TableQuant(q) for q in args.table_quants], prune=True,
                              target=args.target, refit=args.refit, int8=not args.no_int8)
    seconds = time.perf_counter() - start
    folder = cache / f"report_{metric}"
    result.save(cache / f"plan_{metric}.npz", folder)
    report = result.report
    summary = {"metric": metric, "budget": budget, "seconds": round(seconds, 1),
               "original": report["original_metric"], "chosen_search": report["chosen_metric_search"],
               "chosen_compiled": report["chosen_metric_compiled"], "choice": report["choice"],
               "latency_ms": report["latency_ms"], "report": report}
    int8_layers = sum(v == "int8" for v in summary["choice"].values())
    log(f"  chose {len(result.choice) - int8_layers} LUT and {int8_layers} int8 layers: {summary['chosen_compiled']:.2f} vs original "
        f"{summary['original']:.2f} ({seconds:.0f} s)")
    return summary, result


def as_option(value):
    """A choice value read back from the result file: ``"int8"`` (the int8 dense option) or a V."""
    from lut_tvm.optimizer.layers import INT8_DENSE  # pylint: disable=import-outside-toplevel

    return INT8_DENSE if value == "int8" else value


class PlanMaker:
    """Plans of any ``{layer: V}`` from the optimizer's cached k-means centroids (same calibration,
    rows and seed: its centroid cache answers), with the table scales its sensitivity chose."""

    def __init__(self, setup: Setup, summary: dict | None, cache: Path, sub_lens=(), table_quant="int8_per_column"):
        """``summary``: the optimize phase's; None (training only): ``sub_lens``, every table at ``table_quant``."""
        from lut_tvm.optimizer.inputs import import_checked  # pylint: disable=import-outside-toplevel
        from lut_tvm.optimizer.layers import CentroidBank, is_int8, model_layers  # pylint: disable=import-outside-toplevel
        from lut_tvm.plan import TableQuant  # pylint: disable=import-outside-toplevel

        imported, _ = import_checked(setup.encoder, setup.calibration, setup.x_eval, 1)
        offered = summary["report"]["sub_lens_offered"] if summary else list(sub_lens)
        layers = model_layers(imported, offered, setup.names, int8=True)
        self.bank = CentroidBank(imported, layers, setup.calibration, cache / "measurements", 4096, setup.seed)
        # copies: the result file keeps "int8" (the option object would be written as the int 0)
        self.candidates = [dict(c) for c in summary["report"]["candidates"]] if summary else [
            {"layer": l.name, "sub_len": v, "table_quant": table_quant, "saving_ms": float("nan"), "loss_alone": None}
            for l in layers for v in l.sub_lens if not is_int8(v)]
        for cand in self.candidates:
            cand["sub_len"] = as_option(cand["sub_len"])
            if not is_int8(cand["sub_len"]):
                self.bank.table_quant[(cand["layer"], cand["sub_len"])] = TableQuant(cand["table_quant"])
        self.saving = {(c["layer"], c["sub_len"]): c["saving_ms"] for c in self.candidates}
        self.dense_model_ms = summary["report"]["latency_ms"]["dense_cost_model_base"] if summary else float("nan")

    def predict_ms(self, choice: dict) -> float:
        return self.dense_model_ms - sum(self.saving[(n, v)] for n, v in choice.items())

    def ordered(self, sub_len: int) -> list[str]:
        """Layers by their measured loss alone at ``sub_len`` (not measured: their least loss at any V)."""
        def loss(name):
            mine = [c for c in self.candidates if c["layer"] == name and c["loss_alone"] is not None]
            at_v = [c["loss_alone"] for c in mine if c["sub_len"] == sub_len]
            return at_v[0] if at_v else min((c["loss_alone"] for c in mine), default=float("inf"))
        names = list(dict.fromkeys(c["layer"] for c in self.candidates if c["sub_len"] == sub_len))
        return sorted(names, key=lambda n: (loss(n), names.index(n)))


def run_frontier(setup: Setup, maker: PlanMaker, sub_lens, log) -> list[dict]:
    """Per V: the ``n`` least sensitive layers (alone) as LUTs, the rest dense: cosine / topic
    (torch hard forward = the kernels' numerics) and predicted latency."""
    from lut_tvm.optimizer.evaluate import TorchEvaluator  # pylint: disable=import-outside-toplevel

    evaluator = TorchEvaluator(setup.encoder, setup.x_eval)
    rows = []
    for sub_len in sub_lens:
        order = maker.ordered(sub_len)
        for count in [c for c in FRONTIER_COUNTS if c <= len(order)]:
            choice = {name: sub_len for name in order[:count]}
            row = {"V": sub_len, "lut_layers": count, "predicted_ms": maker.predict_ms(choice),
                   **setup.measures(evaluator.outputs(maker.bank.plan(choice)))}
            rows.append(row)
            log(f"  frontier V={sub_len} n={count}: cosine {row['cosine']:.4f}, topic {row['topic_acc']:.1f}, "
                f"predicted {row['predicted_ms']:.2f} ms")
    return rows


def run_speed(setup: Setup, plans: dict, work: Path, log, target="native") -> dict:
    """Median ms at 1 thread (batch 1, 64 tokens) of ORT fp32 / int8 (dynamic) of the exported encoder,
    TVM dense and each plan compiled with ``lut_tvm.compile`` (shipped tuning logs where they match),
    interleaved round by round. Timing is trusted only when the 1-minute load is below 1.5."""
    # pylint: disable=import-outside-toplevel
    from benchmarks.common.peers import compile_tvm, export_onnx, ort_runner, quantize_int8, tvm_runner
    from benchmarks.common.timing import calls_per_sample, interleaved_samples

    work.mkdir(parents=True, exist_ok=True)
    example = np.ascontiguousarray(setup.x_eval[:1])
    onnx_path = export_onnx(setup.encoder, example, work / "model.onnx")
    int8_path = quantize_int8(onnx_path, work / "model_int8.onnx")
    runners = {"ORT fp32": ort_runner(onnx_path, example, 1), "ORT int8": ort_runner(int8_path, example, 1)}
    built = {}
    for label, plan in {"TVM dense": None, **plans}.items():
        path = work / f"{label.replace(' ', '_').replace('=', '')}.so"
        start = time.perf_counter()
        built[label] = compile_tvm(setup.encoder, plan, example, path, target=target)
        built[label]["compile_s"] = round(time.perf_counter() - start, 1)
        runners[label] = tvm_runner(path, example)[0]
        log(f"  compiled {label}: {built[label]}")
    load_before = os.getloadavg()[0]
    number = {name: calls_per_sample(fn, 0.1) for name, fn in runners.items()}
    samples = interleaved_samples(runners, rounds=9, number=number)
    load_after = os.getloadavg()[0]
    medians = {name: float(np.median(values)) * 1e3 for name, values in samples.items()}
    for name, value in medians.items():
        log(f"  {name}: {value:.2f} ms")
    return {"ms": medians, "built": built, "threads": 1, "batch": 1, "tokens": MAX_TOKENS,
            "load": [load_before, load_after], "trusted": max(load_before, load_after) < 1.5,
            "timing": "median of 9 interleaved samples, each >= 0.1 s of calls"}


def run_train(setup: Setup, maker: PlanMaker, choice: dict, label: str, budget_s: float, cache: Path, log):
    """eLUT-NN (``lut_tvm.train.elut``, per-column table scales) of the plan ``choice`` from the optimizer's
    k-means centroids: progressive layer-wise (centroids, then weights), then end-to-end distillation
    of the six blocks' hidden states and the embedding; bounded by ``budget_s`` seconds (the
    layer-wise stage's rows and epochs scale down with the layer count). Returns ``(entry: cosine /
    topic before and after, the trained dense model, its plan)``."""
    # pylint: disable=import-outside-toplevel
    import torch.nn.functional as F
    from lut_tvm.optimizer.evaluate import lut_modules
    from lut_tvm.train import export_plan, to_dense_model
    from lut_tvm.train.elut import train_end_to_end, train_layerwise
    from lut_tvm.train.layers import replace_module

    plan = maker.bank.plan(choice)
    model = copy.deepcopy(setup.encoder)
    for name, lut in lut_modules(model, plan).items():
        replace_module(model, name, lut)

    def measure():
        model.eval()
        with torch.no_grad():
            emb = np.concatenate([model(torch.from_numpy(c)).numpy() for c in np.array_split(setup.x_eval, 4)])
        return setup.measures(emb)

    # Seen here (2 cores shared, load ~6): a V=2 layer takes ~60 s at 16k rows and 2+2 epochs, plus a
    # capture pass over the texts through the LUT layers before it (grows with the layer count).
    per_layer = budget_s * 0.7 / max(len(choice), 1)
    rows = int(min(16384, max(2048, 16384 * per_layer / 60)))
    epochs = 2 if per_layer >= 30 else 1
    texts = 64 if setup.quick else (1024 if len(choice) <= 12 else 256)
    distill, _ = load_distillation_texts(setup.test_texts, limit=texts, seed=setup.seed)
    x_distill = torch.from_numpy(by_length(pack(setup.tokenizer, distill)))
    entry = {"plan": label, "lut_layers": len(choice), "V": sorted(set(choice.values())), "scales": "column",
             "distillation_texts": len(distill), "budget_s": round(budget_s), "before": measure()}
    log(f"[train {label}] {len(choice)} layers; before: {entry['before']}")
    start = time.perf_counter()
    entry["layerwise"] = {"max_rows": rows, "centroid_epochs": epochs, "weight_epochs": epochs}
    train_layerwise(model, setup.encoder, x_distill, centroid_epochs=epochs, weight_epochs=epochs, lr=1e-3,
                    batch_rows=256, max_rows=rows, batch_size=32, scales="column", row_mask=token_mask,
                    seed=setup.seed, checkpoint=cache / f"train_{label}_layerwise.pt")
    entry["layerwise"]["seconds"] = round(time.perf_counter() - start, 1)
    entry["after_layerwise"] = measure()
    log(f"  after layer-wise ({entry['layerwise']['seconds']:.0f} s): {entry['after_layerwise']}")
    left = budget_s - (time.perf_counter() - start)
    if left > 60:
        blocks = [f"bert.encoder.layer.{i}" for i in range(6)]

        def embedding_cosine(out, target):
            return 10.0 * (1 - F.cosine_similarity(out, target, dim=-1)).mean()

        e2e_start = time.perf_counter()
        train_end_to_end(model, setup.encoder, x_distill, hidden_modules=blocks, output_loss=embedding_cosine,
                         epochs=1, lr=3e-5, batch_size=16, scales="column", seed=setup.seed,
                         checkpoint=cache / f"train_{label}_e2e.pt")
        entry["end_to_end"] = {"epochs": 1, "lr": 3e-5, "seconds": round(time.perf_counter() - e2e_start, 1)}
        entry["after_end_to_end"] = measure()
        log(f"  after end-to-end ({entry['end_to_end']['seconds']:.0f} s): {entry['after_end_to_end']}")
    entry["seconds"] = round(time.perf_counter() - start, 1)
    trained_plan = export_plan(model, cache / f"plan_trained_{label}.npz")
    return entry, to_dense_model(model).eval(), trained_plan


def compiled_measures(setup: Setup, dense_model: nn.Module, plan) -> dict:
    """Cosine / topic of ``dense_model`` compiled with ``plan`` (batch 1) on the eval texts."""
    import lut_tvm  # pylint: disable=import-outside-toplevel
    from lut_tvm.optimizer.evaluate import run_batched  # pylint: disable=import-outside-toplevel

    compiled = lut_tvm.compile(dense_model, plan, example_inputs=(setup.x_eval[:1],))
    return setup.measures(run_batched(compiled, setup.x_eval, 1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few texts, two V, no training to speak of")
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES + (REPORT_ONLY,))
    parser.add_argument("--budget", type=float, default=5.0, help="points of mean cosine x100 (5: cos >= 0.95)")
    parser.add_argument("--accuracy-budget", type=float, default=1.0, help="points of topic accuracy")
    parser.add_argument("--sub-lens", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--table-quants", nargs="+", default=["int8_per_column"],
                        choices=["int8_per_layer", "int8_per_column"])
    parser.add_argument("--eval-every", type=int, default=4, help="every n-th held-out fortune is evaluated")
    parser.add_argument("--calibration", type=int, default=128, help="packed calibration sequences")
    parser.add_argument("--timing-number", type=int, default=10)
    parser.add_argument("--train-minutes", type=float, default=20.0, help="bound of the training phase (CPU)")
    parser.add_argument("--frontier-v", type=int, nargs="+", default=[2, 4, 16], help="V of the frontier rows")
    parser.add_argument("--train-plans", nargs="+", default=["chosen", "all36_V2"],
                        help="plans the train phase trains: the optimizer's choice, every Linear at the least V")
    parser.add_argument("--out", type=Path, default=None, help="result .json (default benchmarks/results/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", default="native",
                        help='the compile and timing target, e.g. \'{"kind": "llvm", "mcpu": "cascadelake"}\' '
                        "for AVX-512 with VNNI (the int8 layers' vpdpbusd)")
    parser.add_argument("--refit", choices=("none", "ridge"), default="none",
                        help="optimize's table refit (none by default: on a torch module it costs two whole-model "
                        "compiles per chosen layer)")
    parser.add_argument("--no-int8", action="store_true", help="do not offer Linears as int8 matmuls")
    args = parser.parse_args(argv)
    if args.quick:
        args.sub_lens, args.timing_number, args.frontier_v, args.train_minutes = [4, 16], 3, [16], 1.0
    cache = user_cache_dir("minilm_optimize", "quick" if args.quick else "full")
    out_json = args.out or RESULTS / f"{NAME}{'_quick' if args.quick else ''}.json"
    previous = __import__("json").loads(out_json.read_text()) if out_json.is_file() else {}
    log = lambda line: print(line, flush=True)  # noqa: E731
    if REPORT_ONLY in args.phases:
        if not previous:
            raise SystemExit(f"minilm_optimize: no {out_json} to render")
        write_text_atomic(out_json.with_suffix(".md"), render(previous))
        plot(previous, out_json.with_suffix(".png"))
        return 0
    setup = Setup(args.seed, args.quick, args.eval_every, args.calibration)
    log(f"[minilm_optimize] {setup.data}")
    result = {k: v for k, v in previous.items() if k in PHASES + ("chosen_torch",)}
    command = "python -m benchmarks.accuracy.minilm_optimize " + " ".join(argv if argv is not None else os.sys.argv[1:])
    result.update(data=setup.data, command=command, load={"start": os.getloadavg()[0]},
                  commands=[*previous.get("commands", []), f"{command}  ({time.strftime('%H:%M UTC', time.gmtime())})"],
                  original=setup.measures(setup.reference))

    def save():  # after every phase: a later phase that fails or is stopped keeps the earlier ones
        result["load"]["end"] = os.getloadavg()[0]
        result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        write_json_atomic(out_json, result)
        write_text_atomic(out_json.with_suffix(".md"), render(result))
        plot(result, out_json.with_suffix(".png"))

    if "optimize" in args.phases:
        result["optimize"], _ = run_optimize(setup, args, "cosine", cache, log)
        save()
    if "accuracy" in args.phases:
        result["accuracy"], _ = run_optimize(setup, args, "accuracy", cache, log)
        save()
    if not {"frontier", "speed", "train"} & set(args.phases):
        return 0
    if "optimize" not in result and set(args.phases) - {"train"}:
        raise SystemExit("minilm_optimize: the frontier and speed phases need the optimize phase's result")
    maker = PlanMaker(setup, result.get("optimize"), cache, args.sub_lens, args.table_quants[-1])
    chosen = {n: as_option(v) for n, v in result["optimize"]["choice"].items()} if "optimize" in result else None
    from lut_tvm.optimizer.evaluate import TorchEvaluator  # pylint: disable=import-outside-toplevel

    if chosen is not None:
        result["chosen_torch"] = setup.measures(TorchEvaluator(setup.encoder, setup.x_eval).outputs(
            maker.bank.plan(chosen) if chosen else None))
    offered = result["optimize"]["report"]["sub_lens_offered"] if "optimize" in result else args.sub_lens
    if "frontier" in args.phases:
        result["frontier"] = run_frontier(setup, maker, [v for v in args.frontier_v if v in offered], log)
        save()
    all_layers = {v: {n: v for n in setup.names} for v in (2, 16) if v in offered}
    if "speed" in args.phases:
        plans = {f"optimize (cos >= {1 - args.budget / 100:.2f})": maker.bank.plan(chosen)} if chosen else {}
        plans.update({f"all 36 at V={v}": maker.bank.plan(c) for v, c in all_layers.items()})
        result["speed"] = run_speed(setup, plans, cache / "speed", log, args.target)
        save()
    if "train" in args.phases:
        result["train"] = [e for e in result.get("train", []) if e["plan"] not in args.train_plans]  # others kept
        # V=16 with every layer is in accuracy.md (eLUT-NN layer-wise: cosine 0.341); V=2 is the published recipe
        jobs = ([("chosen", chosen, 0.35)] if chosen else []) + \
            [(f"all36_V{v}", all_layers[v], 0.65) for v in sorted(all_layers)[:1]]
        for label, choice, share in [job for job in jobs if job[0] in args.train_plans]:
            entry, dense_model, plan = run_train(setup, maker, choice, label, args.train_minutes * 60 * share,
                                                 cache, log)
            entry["compiled"] = compiled_measures(setup, dense_model, plan)
            log(f"  compiled: {entry['compiled']}")
            result["train"].append(entry)
            save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
