"""optimize's report: a JSON-able dict, rendered as report.md, report.json and (with matplotlib)
frontier.png, the accuracy-latency points of the candidates and plans tried and the chosen one."""

from __future__ import annotations

import math
from pathlib import Path

from ..files import save_figure, write_json_atomic, write_text_atomic
from .layers import is_int8, num_centroids_of, option_label

NOTES = [
    "K = 16 everywhere (one 16-entry table column per shuffle lane); K = 32 and 64 as well where the "
    "target has AVX-512 VBMI (the lookup runs vpermb on a 64-byte table), not offered elsewhere.",
    "Tables: INT8 with one scale per layer or per output column, whichever loses less with the layer "
    "alone (the same kernel runs both: it reads a scale vector either way, so the latency is shared).",
    "Refit (--refit ridge): the tables of a candidate alone are k-means (P.W) or refit by ridge regression "
    "to the layer's exact outputs on the calibration rows, whichever loses less; the chosen plan is then "
    "refit layer by layer in model order on the inputs the LUT model feeds each layer (targets: the original "
    "layers' outputs), each layer's refit kept where the plan's loss plus margin on the eval data then falls, "
    "and the plan extended with the candidates left.",
    "Budget: a plan is accepted (in the search, the compiled check and the refit's extension) when its loss "
    "on the eval data plus two standard errors of that loss (the per-sample differences' standard deviation "
    "over sqrt(n)) stays within the budget, so a plan that flips many predictions both ways is not taken on a "
    "lucky balance of a few samples, nor one picked among many for its low loss on these samples alone.",
    "Latency: each layer's kernel compiled alone (default schedules, no tuning log) and timed with "
    "TVM's time evaluator (median); predicted = whole dense model - sum of per-layer savings (scaled by whole dense model / "
    "sum of the dense layers' kernels where that sum is larger: timing noise).",
    "Peers, the original model at the same batch and threads, each timed in a separate process so its "
    "thread pool and TVM's never share cores (median of the same number of runs): PyTorch fp32 runs its "
    "torch.export program (not for an .onnx model); ONNX Runtime the model exported to ONNX (an .onnx "
    "model as given), fp32 and dynamic int8 (onnxruntime.quantization.quantize_dynamic).",
]


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _options_text(options) -> str:
    """``int8, V=2, 4`` for a list of options (the int8 option first)."""
    options = sorted(set(options))
    lut = [str(v) for v in options if not is_int8(v)]
    return ", ".join([option_label(v) for v in options if is_int8(v)][:1] + (["V=" + ", ".join(lut)] if lut else []))


def build_report(*, source, metric, budget, target, threads, batch, evaluator, eval_samples, layers,
                 candidates, steps, choice, cost, original, search_loss, compiled_loss, backed_off,
                 measured_ms, dense_measured_ms, new_timings, sub_lens, num_centroids=(16,), peers=()) -> dict:
    """The report dict: settings, original vs chosen metric, predicted vs measured latency, per layer
    what was chosen and why, every candidate and every end-to-end check of the search, and the
    ``peers`` rows (``{"label", "name", "threads", "metric", "ms"}``, or ``"error"`` in place of the
    figures a peer could not give: PyTorch fp32, ONNX Runtime fp32 and int8 of the original model)."""
    per_layer = []
    for layer in layers:
        mine = [c for c in candidates if c.layer == layer.name]
        chosen = choice.get(layer.name)
        if chosen is not None:
            cand = next(c for c in mine if c.sub_len == chosen)
            why = (f"{option_label(chosen)}, {cand.table_quant}, {cand.tables} tables: saves {cand.saving_ms:.4f} ms for {cand.loss_alone:.2f} points alone "
                   f"(plan loss {cand.loss_with_plan:.2f} with it)")
        else:
            by_status: dict[str, list[int]] = {}
            for cand in mine:
                by_status.setdefault(cand.status, []).append(cand.sub_len)
            why = "dense: " + ("no LUT candidate (no V divides D)" if not mine else "; ".join(
                f"{_options_text(subs)} {status}" for status, subs in sorted(by_status.items())))
        per_layer.append({"layer": layer.name, "shape": layer.describe(), "D": layer.depth,
                          "dense_ms": cost.dense_ms[layer.name], "chosen_V": None if chosen is None or is_int8(chosen) else int(chosen),
                          "int8": chosen is not None and is_int8(chosen),
                          "chosen_K": None if chosen is None or is_int8(chosen) else num_centroids_of(chosen), "why": why})
    predicted = cost.predict_ms(choice)
    return {
        "model": source, "metric": metric, "budget": budget, "target": target, "threads": threads,
        "batch": batch, "search_evaluator": evaluator, "eval_samples": eval_samples,
        "sub_lens_offered": sub_lens, "num_centroids_offered": list(num_centroids),
        "original_metric": original,
        "chosen_metric_search": original - search_loss,
        "chosen_metric_compiled": original - compiled_loss,
        "backed_off_after_compiled_check": backed_off,
        "latency_ms": {"dense_cost_model_base": cost.dense_model_ms, "dense_measured": dense_measured_ms,
                       "predicted": predicted, "measured": measured_ms,
                       # the whole dense model drifts with the machine's load between the start and
                       # the end of a run: compare savings, dense and LUT timed back to back at the end
                       "predicted_saving": cost.dense_model_ms - predicted,
                       "measured_saving": dense_measured_ms - measured_ms},
        "peers": [{k: _finite(v) for k, v in row.items()} for row in peers],
        "new_timings": new_timings,
        "choice": {name: str(option) if is_int8(option) else int(option)
                   for name, option in choice.items()},  # V per LUT layer, "int8" per int8 layer
        "choice_K": {name: num_centroids_of(option) for name, option in choice.items() if not is_int8(option)},
        "layers": per_layer,
        "candidates": [{k: _finite(v) for k, v in c.to_dict().items()} for c in candidates],
        "steps": [{"tried": s.tried, "loss": s.loss, "accepted": s.accepted,
                   "predicted_ms": cost.predict_ms(s.choice)} for s in steps],
        "notes": NOTES,
    }


def _peer_line(row: dict) -> str:
    """A peer's row of the summary table: its metric and latency, or why it has none."""
    metric = "" if row.get("metric") is None else f"{row['metric']:.2f}"
    latency = f"{row['ms']:.4f}" if row.get("ms") is not None else ""
    if row.get("error"):
        latency = (latency + "; " if latency else "") + f"not measured: {row['error']}"
    return f"| {row['name']}, {row['threads']} thread(s) | {metric} | {latency} |"


def render_markdown(report: dict) -> str:
    lat = report["latency_ms"]
    unit = "accuracy %" if report["metric"] == "accuracy" else "mean cosine x100"
    lines = [
        f"# lut-tvm optimize: {report['model']}",
        "",
        f"Budget {report['budget']} points of {unit}; target {report['target']}; "
        f"{report['threads']} thread(s); batch {report['batch']}; {report['eval_samples']} eval samples; "
        f"search evaluated with the {report['search_evaluator']} forward, final plan on the compiled model.",
        "",
        "| | metric | latency ms |",
        "|---|---:|---:|",
        f"| original (dense TVM) | {report['original_metric']:.2f} | {lat['dense_measured']:.4f} |",
        f"| chosen plan, predicted | {report['chosen_metric_search']:.2f} | {lat['predicted']:.4f} |",
        f"| chosen plan, compiled | {report['chosen_metric_compiled']:.2f} | {lat['measured']:.4f} |",
        *[_peer_line(row) for row in report.get("peers", [])],
        "",
        f"Saving over dense: predicted {lat['predicted_saving']:.4f} ms (per-layer kernels), measured "
        f"{lat['measured_saving']:.4f} ms (whole compiled models timed back to back; the dense model "
        f"measured {lat['dense_cost_model_base']:.4f} ms at the start of the run).",
        "",
        "## Per layer",
        "",
        "| layer | weight | D | dense ms | chosen | why |",
        "|---|---|---:|---:|---|---|",
    ]
    for row in report["layers"]:
        chosen = "int8" if row.get("int8") else f"V={row['chosen_V']}" if row["chosen_V"] else "dense"
        lines.append(f"| {row['layer']} | {row['shape']} | {row['D']} | {row['dense_ms']:.4f} | {chosen} | "
                     f"{row['why']} |")
    lines += ["", "## Candidates (one layer as LUT, the rest dense)", "",
              "| layer | V | table scales | tables | saving ms | loss alone | status |",
              "|---|---:|---|---|---:|---:|---|"]
    for cand in report["candidates"]:
        loss = "" if cand["loss_alone"] is None else f"{cand['loss_alone']:.2f}"
        lines.append(f"| {cand['layer']} | {cand['sub_len']} | {cand['table_quant']} | {cand.get('tables', 'kmeans')} | "
                     f"{cand['saving_ms']:.4f} | {loss} | {cand['status']} |")
    lines += ["", "## Search (each plan checked end to end)", "",
              "| added | loss + margin | predicted ms | accepted |", "|---|---:|---:|---|"]
    for step in report["steps"]:
        lines.append(f"| {step['tried']} | {step['loss']:.2f} | {step['predicted_ms']:.4f} | "
                     f"{'yes' if step['accepted'] else 'no'} |")
    lines += _refit_lines(report.get("refit"))
    tuned = report.get("finetune")
    if tuned:
        lines += ["", f"Fine-tuned {tuned['epochs']} epoch(s) (train_lutnn): compiled loss "
                  f"{tuned['compiled_loss']:.2f} points; {'kept' if tuned['kept'] else 'not kept (no better)'}."]
    lines += _extend_lines(report.get("finetune_extend"))
    if report["backed_off_after_compiled_check"]:
        lines += ["", f"Backed off after the compiled check: {', '.join(report['backed_off_after_compiled_check'])}"]
    lines += _held_back_lines(report.get("held_back"), report["budget"])
    slower = report.get("slower_than_dense")
    if slower:
        lines += ["", f"The plan the search chose ({len(slower['choice'])} layer(s)) measured {slower['measured_ms']:.4f} ms "
                  f"against {slower['dense_ms']:.4f} ms for the dense model, timed twice back to back: every layer "
                  "was kept dense."]
    lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def _held_back_lines(held: dict | None, budget: float) -> list[str]:
    """The report's section on the final check on the eval samples held back from the search."""
    if not held or not held.get("samples"):
        return ["", f"No held-back check: {held['skipped']}."] if held and held.get("skipped") else []
    lines = ["", "## Held-back check", "",
             f"The final plan compiled, on {held['samples']} eval samples the search never saw: loss "
             f"{held['loss']:.2f} ± {held['standard_error']:.2f} points (budget {budget}, held to it with "
             f"{held['margin_standard_errors']:g} standard error)."]
    if held["backed_off"]:
        lines += ["", "| plan checked (layers) | loss | standard error |", "|---|---:|---:|"]
        lines += [f"| {len(t['layers'])}: {', '.join(t['layers']) or 'all dense'} | {t['loss']:.2f} | "
                  f"{t['standard_error']:.2f} |" for t in held["tried"]]
        lines += ["", f"Backed off: {', '.join(held['backed_off'])}."]
    return lines


def _refit_lines(refit: dict | None) -> list[str]:
    """The report's section on the refit of the chosen plan (none without ``--refit ridge``)."""
    if not refit or refit.get("loss_after") is None:
        return []
    kept = ", ".join(refit.get("refit_layers", []))
    lines = ["", "## Refit of the chosen plan (ridge, layer by layer with compounding)", "",
             f"Loss {refit['loss_before']:.2f} -> {refit['loss_after']:.2f} points on the eval data: "
             + (f"refit kept for {kept}; then the candidates left, each checked end to end:" if refit["kept"]
                else "no layer's refit lowered the loss; none kept.")]
    if refit["extended"]:
        lines += ["", "| added | loss | accepted |", "|---|---:|---|"]
        lines += [f"| {e['tried']} | {e['loss']:.2f} | {'yes' if e['accepted'] else 'no'} |" for e in refit["extended"]]
    if refit.get("dropped"):
        lines += ["", f"This refit plan was then dropped: {refit['dropped']}; the plan written keeps every layer dense."]
    return lines


def _extend_lines(rows: list | None) -> list[str]:
    """The report's section on the candidates tried after fine-tuning (``optimizer.trained_extend``)."""
    if not rows:
        return []
    lines = ["", "## Trained extension (candidates left dense, each trained into the fine-tuned plan)", "",
             "| layer | option | saving ms | loss alone (untrained) | compiled loss | loss + margin | kept | s |",
             "|---|---|---:|---:|---:|---:|---|---:|"]
    return lines + [f"| {r['layer']} | {r['option']} | {r['saving_ms']:.4f} | {r['loss_alone']:.2f} | {r['loss']:.2f} | "
                    f"{r['guarded_loss']:.2f} | {'yes' if r['kept'] else 'no'} | {r['seconds']:.0f} |" for r in rows]


def plot_frontier(report: dict, path: Path) -> Path | None:
    """frontier.png: metric vs predicted latency of each candidate alone and each plan tried, the
    chosen plan (predicted and measured) and the original; None without matplotlib."""
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    lat, base = report["latency_ms"], report["original_metric"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    alone = [c for c in report["candidates"] if c["loss_alone"] is not None]
    ax.scatter([lat["dense_cost_model_base"] - c["saving_ms"] for c in alone],
               [base - c["loss_alone"] for c in alone], s=14, alpha=0.5, label="one layer as LUT")
    ax.scatter([s["predicted_ms"] for s in report["steps"]], [base - s["loss"] for s in report["steps"]],
               s=20, marker="s", alpha=0.7, label="plans tried")
    ax.scatter([lat["dense_measured"]], [base], marker="o", s=60, color="k", label="original (dense TVM)")
    ax.scatter([lat["predicted"]], [report["chosen_metric_search"]], marker="*", s=160, color="C3",
               label="chosen (predicted)")
    ax.scatter([lat["measured"]], [report["chosen_metric_compiled"]], marker="X", s=90, color="C2",
               label="chosen (compiled, measured)")
    for index, row in enumerate(r for r in report.get("peers", []) if r.get("ms") is not None
                                and r.get("metric") is not None):
        ax.scatter([row["ms"]], [row["metric"]], marker="D", s=50, color=f"C{4 + index}", label=row["name"])
    ax.axhline(base - report["budget"], color="gray", linestyle="--", linewidth=0.8, label="budget")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel(report["metric"] + (" (%)" if report["metric"] == "accuracy" else " x100"))
    ax.set_title("accuracy-latency frontier")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(report: dict, folder) -> list[Path]:
    """report.md, report.json and (if matplotlib imports) frontier.png in ``folder``."""
    folder = Path(folder)
    written = [write_text_atomic(folder / "report.md", render_markdown(report)),
               write_json_atomic(folder / "report.json", report)]
    png = plot_frontier(report, folder / "frontier.png")
    return written + ([png] if png else [])
