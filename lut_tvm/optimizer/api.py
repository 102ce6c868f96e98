"""``optimize``: the fastest LUT plan whose metric on the evaluation data stays within a budget of the
original model's, found by measured sensitivity, measured kernel latency and a verified greedy search."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import LutTvmError
from ..plan import LayerPlan, Plan, TableQuant
from ..targets import is_host_runnable, resolve_target
from .cache import MeasurementCache, digest
from .holdback import HeldBackCheck, split_eval
from .evaluate import (MARGIN_STANDARD_ERRORS, CompiledEvaluator, TorchEvaluator, loss_margin, loss_standard_error,
                       metric_value, run_batched, torch_layer_modules)
from .inputs import (DEFAULT_REFIT, DEFAULT_VERIFY_FRACTION, check_eval, check_refit, check_settings,
                     check_verify_fraction, import_checked, is_torch_module)
from .latency import CostModel, KernelTimer
from .layers import DEFAULT_SUB_LENS, CentroidBank, is_int8, model_layers, offered_centroids, offered_int8
from .refit import can_refit, refit_and_extend
from .search import Candidate, greedy_search, prefer_single_layer, uniform_start

LOG = logging.getLogger("lut_tvm")


@dataclass
class OptimizeResult:
    """The chosen plan, the report (a JSON-able dict; ``report.write_report`` renders it) and the
    cost model (``predict_ms({layer: V})``) the search used."""

    plan: Plan
    report: dict
    cost_model: CostModel = field(repr=False)
    choice: dict[str, int] = field(default_factory=dict)
    model: object = None  # the model the plan binds to: the original, or the fine-tuned copy

    def save(self, plan_path, report_dir=None) -> list[Path]:
        """Write the plan and (if ``report_dir``) report.md / report.json / frontier.png."""
        from .report import write_report  # pylint: disable=import-outside-toplevel

        written = [self.plan.save(plan_path)]
        if report_dir is not None:
            written += write_report(self.report, report_dir)
        return written


class _Metrics:
    """Metric points lost by a plan (layer -> V) on the eval data, remembered on disk per evaluator."""

    def __init__(self, evaluator, bank, metric, labels, cache_dir, model_key):
        self.evaluator, self.bank, self.metric, self.labels = evaluator, bank, metric, labels
        self.cache = MeasurementCache(cache_dir, "metrics")
        self.reference = evaluator.outputs(None)
        _check_labels_fit(metric, labels, self.reference)
        # the original outputs in the key: any change of the model (not only its LUT-able weights)
        self.prefix = f"{model_key}|{digest(self.reference)}|{evaluator.kind}|{metric}|{bank.data_key}"
        self.original = metric_value(metric, self.reference, self.reference, labels)

    def of_outputs(self, outputs) -> float:
        return metric_value(self.metric, outputs, self.reference, self.labels)

    def margin_of_outputs(self, outputs) -> float:
        return loss_margin(self.metric, outputs, self.reference, self.labels)

    def _measured(self, choice: dict[str, int]) -> tuple[float, float]:
        """``(metric, standard error of its loss)`` of the plan of ``choice`` on the eval data (cached on disk)."""
        plan = self.bank.plan(choice)
        key = f"{self.prefix}|margin|{sorted(_layer_key(l) for l in plan.layers)}"
        value = self.cache.get(key)
        if value is None:
            outputs = self.evaluator.outputs(plan)
            value = [self.of_outputs(outputs), loss_standard_error(self.metric, outputs, self.reference, self.labels)]
            self.cache.put(key, value)
        return float(value[0]), float(value[1])

    def loss(self, choice: dict[str, int]) -> float:
        """Metric points the plan of ``choice`` loses on the eval data."""
        return self.original - self._measured(choice)[0]

    def guarded_loss(self, choice: dict[str, int]) -> float:
        """The plan's loss plus its margin (``evaluate.loss_margin``): what the search holds to the budget."""
        metric, standard_error = self._measured(choice)
        return self.original - metric + MARGIN_STANDARD_ERRORS * standard_error


def _check_labels_fit(metric: str, labels, reference: np.ndarray) -> None:
    """LutTvmError unless every accuracy label is a class index of the model's outputs."""
    classes = int(np.prod(reference.shape[1:]))
    if metric == "accuracy" and labels is not None and len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise LutTvmError(f"optimize: labels 'y' range from {int(labels.min())} to {int(labels.max())}, but the "
                          f"model has {classes} outputs per sample (argmax classes 0..{classes - 1})")


def small_eval_note(metric: str, eval_samples: int, budget: float) -> str | None:
    """A warning when one eval sample is worth more than a quarter of the budget: the search then
    decides the budget by a few samples, and a plan chosen among many candidates on them can lose
    more on other data."""
    if metric != "accuracy" or not eval_samples or 100.0 / eval_samples <= budget / 4:
        return None
    wanted = int(np.ceil(400.0 / budget))
    return (f"the eval data has {eval_samples} samples: one sample is {100.0 / eval_samples:.2f} points of a "
            f"{budget} point budget, so a few samples decide it, and the chosen plan may lose more on other data; "
            f"give at least {wanted} eval samples")


DROPPED_FOR_DENSE = "the chosen plan measured slower than the dense model"
SLOWER_TOLERANCE = 1.10  # timing noise: a plan is dropped only when clearly slower than dense


def _re_timed_or_dense(choice, compiled_lut, dense, timing_input, measured_ms, dense_ms, number, repeat):
    """``(keep, measured_ms, dense_ms)``: a plan that measured more than 10% slower than the dense model
    is timed again, back to back with it; ``keep`` is False if it is still that much slower (the plan
    then goes dense)."""
    if not choice or measured_ms <= dense_ms * SLOWER_TOLERANCE:
        return True, measured_ms, dense_ms
    measured_ms = compiled_lut.benchmark(timing_input, number=number, repeat=repeat) * 1e3
    dense_ms = dense.benchmark(timing_input, number=number, repeat=repeat) * 1e3
    return measured_ms <= dense_ms * SLOWER_TOLERANCE, measured_ms, dense_ms


def _layer_key(layer) -> tuple:
    """A plan layer in the metrics cache key: name, V, K, table scales (and free tables, if any)."""
    if layer.is_int8:
        return (layer.name, "int8", layer.act_bits)
    key = (layer.name, layer.sub_vector_len, layer.num_centroids, layer.table_quant.value)
    return key if layer.tables is None else (*key, digest(layer.tables))


def _threads() -> int:
    return int(os.environ.get("TVM_NUM_THREADS") or os.cpu_count() or 1)


def optimize(model, calibration, eval_x, eval_y=None, budget: float = 1.0, metric: str = "accuracy", *,
             target="native", cache_dir=None, sub_lens=DEFAULT_SUB_LENS, layers=None, batch: int | None = None,
             timing_number: int = 20, timing_repeat: int = 5, max_rows: int = 4096, seed: int = 0,
             evaluator: str = "auto", finetune: int = 0, finetune_data=None, finetune_extend: int = 0,
             table_quants=(TableQuant.INT8_PER_LAYER, TableQuant.INT8_PER_COLUMN),
             peers: bool = True, prune: bool = False, refit: str = DEFAULT_REFIT, int8: bool = True,
             verify_fraction: float = DEFAULT_VERIFY_FRACTION) -> OptimizeResult:
    """The fastest LUT plan (K = 16, per-layer V from ``sub_lens`` or dense) whose ``metric`` on
    ``eval_x`` stays within ``budget`` points of the original model's.

    ``model``: a torch module, ``.onnx`` or ``.pt2`` file. ``calibration``: input samples for the
    k-means centroids. ``metric``: ``accuracy`` (argmax vs ``eval_y``, x100) or ``cosine`` (mean
    cosine to the original model's outputs, x100). ``layers``: consider only these layer names.
    ``cache_dir``: centroids, kernel timings and metrics are cached there (a re-run resumes).
    ``evaluator``: ``auto`` (torch forward for torch modules, else compiled), ``torch`` or
    ``compiled``. The final plan is always verified on the compiled model.
    ``table_quants``: the INT8 table scale granularities tried per candidate (the best alone is kept).
    ``prune``: the greedy search skips a candidate whose loss alone exceeds the budget left
    (``search.greedy_search``; fewer end-to-end checks, for models whose check is slow).
    ``finetune``: epochs of ``lut_tvm.train.train_lutnn`` on ``finetune_data = (x, y)`` for the chosen
    plan (torch modules only); the fine-tuned copy is kept (``result.model``, the plan bound to its
    weights) if its compiled metric is at least the un-tuned plan's, re-verified on the eval data.
    ``finetune_extend``: after fine-tuning, at most this many layers the search left dense (one option
    each, best saving per point lost alone first) are each added to the trained plan as a LUT, trained
    ``finetune`` more epochs and kept if the compiled plan's loss plus margin stays within the budget
    (``optimizer.trained_extend``; torch modules only).
    ``peers``: also measure the original model in PyTorch fp32 and ONNX Runtime fp32 and dynamic int8
    (metric on the eval data, latency at the same batch and threads, each timed in a separate process)
    for the report.
    ``int8``: also offer each dense (Linear) layer as an int8 matmul (``plan.LayerMode.INT8_DENSE``:
    per-row uint8 activations quantized at run time, int8 weights per column), chosen like a LUT
    option where its measured kernel saves time and its loss fits the budget.
    ``refit``: ``ridge`` trains the tables on the calibration data (``optimizer.refit``): each candidate's
    loss alone is measured with k-means tables and with tables refit by ridge regression (the lesser
    kept: the search sees post-training losses; with the compiled evaluator only, as the torch forward
    computes ``P.W`` tables), and the chosen plan is refit layer by layer with compounding (a layer's
    refit kept where it lowers the eval loss) and extended with the candidates left while the budget
    holds; ``none``: k-means tables (``P.W``) only.
    ``verify_fraction``: the share of the eval data held back from the search (seeded, stratified by label);
    the final plan is checked on it compiled and backed off layer by layer until its loss there plus one
    standard error holds the budget (``optimizer.holdback``). 0, or too few samples: no held-back check.
    """
    check_settings(metric, budget)
    check_refit(refit)
    table_quants = [TableQuant(q) for q in table_quants]
    if evaluator not in ("auto", "torch", "compiled"):
        raise LutTvmError(f"optimize: evaluator {evaluator!r} is not one of ['auto', 'torch', 'compiled']")
    eval_x, eval_y = check_eval(metric, eval_x, eval_y)
    split = split_eval(eval_x, eval_y, check_verify_fraction(verify_fraction), seed)
    eval_x, eval_y = split.search_x, split.search_y
    calibration = np.asarray(calibration, dtype=np.float32)
    tvm_target = resolve_target(target)
    if not is_host_runnable(tvm_target):
        raise LutTvmError(f"optimize: target {target!r} does not run on this machine ({os.uname().machine}); "
                          "latency is measured, so optimize on the target itself")
    imported, example = import_checked(model, calibration, eval_x, batch)
    model_batch = imported.input_shapes[0][0]
    candidates_layers = model_layers(imported, sub_lens, layers, offered_centroids(tvm_target),
                                     offered_int8(tvm_target) if int8 else False)
    if not candidates_layers:
        raise LutTvmError(f"optimize: {imported.source} has no layer a LUT of V in {list(sub_lens)} can replace")
    bank = CentroidBank(imported, candidates_layers, calibration, cache_dir, max_rows, seed)

    modules = torch_layer_modules(model, [l.name for l in candidates_layers]) if is_torch_module(model) else None
    if evaluator == "torch" and modules is None:
        raise LutTvmError("optimize: evaluator 'torch' needs a torch module whose layers are nn.Linear / nn.Conv2d")
    compiled_eval = CompiledEvaluator(imported, eval_x, tvm_target, model_batch)
    search_eval = TorchEvaluator(model, eval_x) if modules is not None and evaluator != "compiled" else compiled_eval
    model_key = digest(*(l.site.fingerprint for l in candidates_layers), list(imported.input_shapes), eval_x,
                       None if eval_y is None else eval_y)
    metrics = _Metrics(search_eval, bank, metric, eval_y, cache_dir, model_key)

    threads = _threads()
    timer = KernelTimer(tvm_target, cache_dir, timing_number, timing_repeat, threads)
    dense = compiled_eval.compiled(None)
    whole_key = f"{timer.host}|model={model_key}|dense"
    dense_ms = timer.cache.get(whole_key)
    timing_input = np.ascontiguousarray(run_input(eval_x, model_batch))
    if dense_ms is None:
        dense(timing_input)  # warm up
        dense_ms = dense.benchmark(timing_input, number=timing_number, repeat=timing_repeat) * 1e3
        timer.cache.put(whole_key, dense_ms)
    cost = CostModel(timer, candidates_layers, bank, dense_ms)

    candidates = [Candidate(l.name, v, cost.saving_ms(l.name, v)) for l in candidates_layers for v in l.sub_lens]
    for cand in tqdm(candidates, desc="sensitivity", unit="candidate", leave=False, disable=None):
        if cand.saving_ms > 0:
            _measure_alone(cand, metrics, bank, table_quants,
                           refit == "ridge" and search_eval is compiled_eval and can_refit(_site(bank, cand)))
    start, start_steps = uniform_start(candidates, metrics.guarded_loss, budget, cost.predict_ms)
    choice, steps = greedy_search(candidates, metrics.guarded_loss, budget, start, prune=prune)
    steps = start_steps + steps
    choice = prefer_single_layer(candidates, metrics.guarded_loss, budget, cost.predict_ms, choice, steps)

    final = _verify_compiled(compiled_eval, bank, metrics, choice, budget, candidates)
    compiled_lut, compiled_loss, backed_off = final
    choice = {n: v for n, v in choice.items() if n not in backed_off}
    refit_plan, refit_report = None, None
    if refit == "ridge":
        outcome = refit_and_extend((imported, bank, compiled_eval, metrics, calibration, max_rows, seed), choice,
                                   compiled_lut, compiled_loss, candidates, budget, prune)
        choice, refit_plan, compiled_lut, compiled_loss = outcome.choice, outcome.plan, outcome.compiled, outcome.loss
        refit_report = outcome.report
    measured_ms = compiled_lut.benchmark(timing_input, number=timing_number, repeat=timing_repeat) * 1e3
    dense_now_ms = dense.benchmark(timing_input, number=timing_number, repeat=timing_repeat) * 1e3
    keep, measured_ms, dense_now_ms = _re_timed_or_dense(choice, compiled_lut, dense, timing_input, measured_ms,
                                                         dense_now_ms, timing_number, timing_repeat)
    slower_plan = None
    if not keep:
        slower_plan = {"choice": {n: str(v) for n, v in choice.items()}, "measured_ms": measured_ms,
                       "dense_ms": dense_now_ms}
        LOG.warning("optimize: the chosen plan (%d layer(s)) measured %.4f ms, the dense model %.4f ms: "
                    "keeping every layer dense", len(choice), measured_ms, dense_now_ms)
        choice, refit_plan, compiled_loss, measured_ms = {}, None, 0.0, dense_now_ms
        refit_report = refit_report and {**refit_report, "dropped": DROPPED_FOR_DENSE}
        for cand in candidates:
            if cand.status == "chosen":
                cand.status = f"dropped: {DROPPED_FOR_DENSE}"
    provenance = {"method": "optimize", "metric": metric, "budget": budget, "model": imported.source,
                  "refit": refit}
    if refit_plan is not None:
        choice = {layer.name: choice[layer.name] for layer in refit_plan.layers}  # model order
        plan = Plan(refit_plan.layers, provenance=provenance)
    else:
        plan = bank.plan(choice, provenance=provenance)
    final_model, final_imported, tuned = model, imported, None
    lut_choice = {n: v for n, v in choice.items() if not is_int8(v)}
    if finetune and lut_choice:
        if not is_torch_module(model):
            raise LutTvmError("optimize: finetune needs a torch module (an .onnx / .pt2 file has no trainable layers)")
        from .finetune import exported, finetune_lut  # pylint: disable=import-outside-toplevel

        trained_lut = finetune_lut(model, lut_choice, calibration, finetune_data, finetune, seed)
        tuned_model, tuned_plan = exported(trained_lut, finetune)
        tuned_imported, _ = import_checked(tuned_model, calibration, eval_x, model_batch)
        tuned_plan = _with_int8_layers(tuned_plan, tuned_imported, {n: v for n, v in choice.items() if is_int8(v)})
        tuned_lut = CompiledEvaluator(tuned_imported, eval_x, tvm_target, model_batch).compiled(tuned_plan)
        tuned_loss = metrics.original - metrics.of_outputs(run_batched(tuned_lut, eval_x, model_batch))
        tuned = {"epochs": finetune, "compiled_loss": tuned_loss, "kept": tuned_loss <= compiled_loss}
        if tuned["kept"]:
            final_model, plan, compiled_loss, final_imported = tuned_model, tuned_plan, tuned_loss, tuned_imported
    extension = None
    if finetune and finetune_extend:  # candidates the search left out, each trained into the plan
        from .trained_extend import ExtendSetup, extend_trained  # pylint: disable=import-outside-toplevel

        int8_choice = {n: v for n, v in choice.items() if is_int8(v)}
        extension = extend_trained(ExtendSetup(model, calibration, finetune_data, eval_x, tvm_target, model_batch,
                                               metrics, finetune, seed, complete=lambda p, imp: _with_int8_layers(
                                                   p, imp, int8_choice)), trained_lut if lut_choice else None,
                                   choice, candidates, budget, finetune_extend)
        if extension.plan is not None:
            final_model, plan, compiled_loss, choice = extension.model, extension.plan, extension.loss, extension.choice
            final_imported = extension.imported
            measured_ms = extension.compiled.benchmark(timing_input, number=timing_number, repeat=timing_repeat) * 1e3
    held = None
    if split.held_x is not None and plan.layers:
        held = HeldBackCheck(imported, split.held_x, split.held_y, metric, tvm_target, model_batch).verify(
            final_imported, plan, budget, _drop_order(candidates, choice))
        if held.backed_off:
            plan, choice = held.plan, {n: v for n, v in choice.items() if n not in held.backed_off}
            _mark_backed_off(candidates, held.backed_off)
            compiled_loss = metrics.original - metrics.of_outputs(run_batched(held.compiled, eval_x, model_batch))
            measured_ms = held.compiled.benchmark(timing_input, number=timing_number, repeat=timing_repeat) * 1e3
    from .report import build_report  # pylint: disable=import-outside-toplevel

    peer_rows = _peer_rows(model, timing_input, eval_x, threads, metrics, timing_number, timing_repeat) \
        if peers else []
    report = build_report(
        source=imported.source, metric=metric, budget=budget, target=str(tvm_target), threads=threads,
        batch=model_batch, evaluator=search_eval.kind, eval_samples=len(eval_x), layers=candidates_layers,
        candidates=candidates, steps=steps, choice=choice, cost=cost, original=metrics.original,
        search_loss=metrics.loss(choice), compiled_loss=compiled_loss, backed_off=backed_off,
        measured_ms=measured_ms, dense_measured_ms=dense_now_ms,
        new_timings=timer.cache.new, sub_lens=list(sub_lens), num_centroids=offered_centroids(tvm_target),
        peers=peer_rows)
    report["finetune"] = tuned
    report["finetune_extend"] = extension and extension.rows
    report["slower_than_dense"] = slower_plan
    warning = small_eval_note(metric, len(eval_x), budget)
    if warning:
        LOG.warning("optimize: %s", warning)
        report["notes"] = [*report["notes"], f"Warning: {warning}."]
    report["refit"] = refit_report or {"method": refit}
    report["held_back"] = held.to_dict() if held else {"samples": 0, "skipped": split.note or (
        "verify fraction 0" if verify_fraction == 0 else "the plan has no layer to check")}
    if split.note:
        LOG.warning("optimize: %s", split.note)
        report["notes"] = [*report["notes"], f"Warning: {split.note}."]
    return OptimizeResult(plan, report, cost, choice, final_model)


def _peer_rows(model, timing_input, eval_x, threads, metrics: _Metrics, number: int, repeat: int) -> list[dict]:
    """The report's rows of the original model in PyTorch and ONNX Runtime: ``lut_tvm.peers.peer_rows``
    with each peer's metric on the eval data in place of its outputs."""
    from ..peers import peer_rows  # pylint: disable=import-outside-toplevel

    rows = []
    for label, row in peer_rows(model, timing_input, eval_x, threads, number=number, repeat=repeat).items():
        outputs = row.pop("outputs", None)
        if outputs is not None:
            row["metric"] = metrics.of_outputs(outputs)
        rows.append({"label": label, **row})
    return rows


def _with_int8_layers(plan: Plan, imported, int8_choice: dict) -> Plan:
    """``plan`` plus the int8 dense entries (``{name: Int8Option}``, the width from it) of ``imported``'s
    layers (a fine-tuned copy: its weights, so its fingerprints)."""
    if not int8_choice:
        return plan
    layers = model_layers(imported, sub_lens=(), only=set(int8_choice), int8=True)
    extra = [LayerPlan.int8_dense(l.name, tuple(l.site.weight.shape), l.site.fingerprint,
                                  act_bits=int8_choice[l.name].act_bits) for l in layers]
    return Plan([*plan.layers, *extra], provenance=plan.provenance)


def _drop_order(candidates: list[Candidate], choice: dict):
    """``names -> names`` sorted by least saving per point lost alone first: the order a plan that breaks
    the budget gives its layers back."""
    by_key = {(c.layer, c.sub_len): c for c in candidates}
    return lambda names: sorted(names, key=lambda n: by_key[(n, choice[n])].score)


def _mark_backed_off(candidates: list[Candidate], names) -> None:
    for cand in candidates:
        if cand.status == "chosen" and cand.layer in names:
            cand.status = "backed off: the plan broke the budget on the held-back eval data"


def _site(bank: CentroidBank, cand: Candidate):
    return next(layer.site for layer in bank.layers if layer.name == cand.layer)


def _measure_alone(cand: Candidate, metrics: _Metrics, bank: CentroidBank, table_quants, refit: bool) -> None:
    """The candidate's loss with only its layer as a LUT, at each table scale granularity, with k-means
    tables and (``refit``) ridge-refit tables; the best (first on a tie) is kept for the search. The
    granularities and tables run the same kernel (a scale per output column is a vector the kernels
    read either way), so the latency is the same."""
    if is_int8(cand.sub_len):  # one form: no tables
        cand.loss_alone, cand.tables, cand.table_quant = metrics.loss({cand.layer: cand.sub_len}), "-", "-"
        return
    key = (cand.layer, cand.sub_len)
    losses = {}
    for tables in ("kmeans", "ridge") if refit else ("kmeans",):
        for quant in table_quants:
            bank.table_quant[key] = quant
            (bank.refit.add if tables == "ridge" else bank.refit.discard)(key)
            losses[(tables, quant)] = metrics.loss({cand.layer: cand.sub_len})
    order = list(losses)
    best = min(losses, key=lambda option: (losses[option], order.index(option)))
    bank.table_quant[key] = best[1]
    (bank.refit.add if best[0] == "ridge" else bank.refit.discard)(key)
    cand.loss_alone, cand.tables, cand.table_quant = losses[best], best[0], best[1].value


def run_input(eval_x, batch):
    """One model batch of evaluation inputs (zero-padded if there are fewer samples)."""
    if len(eval_x) >= batch:
        return eval_x[:batch]
    return np.concatenate([eval_x, np.zeros((batch - len(eval_x), *eval_x.shape[1:]), np.float32)])


def _verify_compiled(compiled_eval, bank, metrics, choice, budget, candidates):
    """``(compiled model, loss, backed-off layers)``: the plan compiled and measured on the eval data;
    while its loss plus its margin (``evaluate.loss_margin``) exceeds the budget (the torch forward and the kernels can round an encode
    near-tie apart), the chosen layer with the least saving per point is dropped."""
    by_key = {(c.layer, c.sub_len): c for c in candidates}
    backed_off = []
    current = dict(choice)
    while True:
        compiled = compiled_eval.compiled(bank.plan(current) if current else None)
        outputs = run_batched(compiled, compiled_eval.x, compiled_eval.batch)
        loss = metrics.original - metrics.of_outputs(outputs)
        if loss + metrics.margin_of_outputs(outputs) <= budget or not current:
            return compiled, loss, backed_off
        worst = min(current, key=lambda n: by_key[(n, current[n])].score)
        by_key[(worst, current[worst])].status = "backed off: the compiled plan broke the budget"
        backed_off.append(worst)
        del current[worst]
