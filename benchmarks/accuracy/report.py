"""Build ``accuracy.md`` / ``accuracy.json`` / ``accuracy.png`` from the task results."""

from __future__ import annotations

import json
from pathlib import Path

from lut_tvm.files import save_figure

from .optimize_report import goal_lines, optimize_section

BUDGET_SECONDS = 15 * 60
GOAL_POINTS = 1.0
GOAL_GAP = 2 / 3
GOAL_COSINE = 0.95
LABELS = {"original": "original (fp32)", "kmeans": "k-means only (MADDNESS-style)",
          "kmeans_ridge": "k-means + ridge (MADDNESS free tables, sequential; no backprop)",
          "kmeans_ridge_w": "k-means + ridge on W (tables P.W', sequential; no backprop)",
          "lutnn": "learned: LUT-NN recipe",
          "elut_layerwise": "learned: eLUT-NN layer-wise (progressive reconstruction)",
          "elut": "learned: eLUT-NN layer-wise + end-to-end hidden-state distillation",
          "optimize": "lut_tvm.optimize: fastest plan within the budget on a validation split (compiled)"}
BASELINES = ("original", "kmeans")


def _label(method: str) -> str:
    if method.startswith("reconstruction_"):
        return f"learned: reconstruction on {method.split('_', 1)[1]} of train data"
    return LABELS.get(method, method)


def _row_label(name: str, entry: dict) -> str:
    carried = entry.get("carried_from")
    if carried and entry.get("carried_original") is not None:
        carried += f", original {entry['carried_original']:.2%} there"
    column = entry.get("training", {}).get("scales") == "column"
    return (_label(name) + (" [per-column table scales]" if column else "")
            + (f" (from the run of {carried})" if carried else ""))


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.3f} MB" if nbytes < 1e7 else f"{nbytes / 1e6:.1f} MB"


def _mflops(value: float) -> str:
    return f"{value / 1e6:.3f}" if value < 1e7 else f"{value / 1e6:.1f}"


def gap_closed(original: float, kmeans: float | None, learned: float) -> float | None:
    if kmeans is None:
        return None
    gap = original - kmeans
    return None if abs(gap) < 1e-12 else (learned - kmeans) / gap


def original_of(entry: dict, original: float) -> float:
    """The original's metric a row is compared with: that of its own run for a row carried over from an
    earlier result (``carried_original``), else ``original``."""
    carried = entry.get("carried_original")
    return original if carried is None else carried


def verdicts(result: dict) -> list[dict]:
    """Per learned method: the goals it met or missed, with the numbers."""
    methods = result["methods"]
    key = result["metric"]
    orig, km = methods["original"][key], methods.get("kmeans", {}).get(key)
    out = []
    for name, entry in methods.items():
        if name in BASELINES:
            continue
        base = original_of(entry, orig)
        drop = round((base - entry[key]) * 100, 6)  # 98.3 - 97.3 is 1.0000000000000009 in floats
        closed = gap_closed(base, km if original_of(methods.get("kmeans", {}), orig) == base else None, entry[key])
        row = {"method": name, "drop_points": drop, "within_1_point": drop <= GOAL_POINTS,
               "gap_closed": closed, "gap_goal_met": closed is not None and closed >= GOAL_GAP}
        if "cosine" in entry:
            row["cosine"] = entry["cosine"]
            row["cosine_goal_met"] = entry["cosine"] >= GOAL_COSINE
            cos_closed = gap_closed(1.0, methods.get("kmeans", {}).get("cosine"), entry["cosine"])
            row["cosine_gap_closed"] = cos_closed
        train_total = entry.get("seconds", 0) + entry.get("kmeans_seconds", 0)
        row["lut_training_seconds"] = train_total
        row["within_budget"] = train_total <= BUDGET_SECONDS
        if "cpu_seconds" in entry:
            start_cpu = entry.get("kmeans_cpu_seconds", methods["kmeans"].get("cpu_seconds", 0)) \
                if "kmeans_seconds" in entry else 0
            row["lut_training_cpu_seconds"] = entry["cpu_seconds"] + start_cpu
            row["within_budget_cpu"] = row["lut_training_cpu_seconds"] <= BUDGET_SECONDS
        out.append(row)
    return out


def _budget_text(row: dict) -> str:
    text = (f"LUT training {row['lut_training_seconds']:.0f} s wall "
            f"({'within' if row['within_budget'] else 'OVER'} 15 min)")
    if "lut_training_cpu_seconds" in row:
        text += (f", {row['lut_training_cpu_seconds']:.0f} s CPU of one thread "
                 f"({'within' if row['within_budget_cpu'] else 'OVER'} 15 min)")
    return text + " incl. k-means"


def _best(rows: list[dict], key, higher: bool = True) -> dict | None:
    usable = [r for r in rows if key(r) is not None]
    if not usable:
        return None
    return (max if higher else min)(usable, key=key)


def goals_section(results: list[dict]) -> list[str]:
    """Per task and goal: met or missed, by the method that comes closest, with its numbers."""
    lines = ["## Goals", "",
             "Per task, the method closest to each goal (any learned or refit row). Training time is "
             "judged on the CPU seconds of the one torch thread: the wall times were taken on a 2-core "
             "machine shared with other jobs (load averages in each section), so they overstate an idle "
             "machine's time several-fold.", "",
             "Every LUT row replaces every layer but the first and the last (digits, MNIST-1D) or every "
             "encoder Linear (MiniLM): see each section's LUT layers line; the optimize rows (digits, MNIST-1D, "
             "KWS) are lut_tvm.optimize's plan, each layer a LUT, an int8 matmul or dense as it chose (each "
             "section's Plan line), judged on the test split, measured on the compiled model. Rows carried over from "
             "an earlier run are compared with that run's original.", "",
             "| task | goal | met? | closest method: numbers |", "|---|---|---|---|"]
    for result in results:
        if "skipped" in result:
            lines.append(f"| {result['task']} | all | skipped | {result['skipped'][:80]} |")
            continue
        rows = verdicts(result)
        methods, key = result["methods"], result["metric"]
        orig = methods["original"][key] * 100

        def cell(row: dict | None, text: str) -> str:
            return "-" if row is None else f"{_label(row['method'])}: {text}"

        best = _best(rows, lambda r: -r["drop_points"])
        lines.append(f"| {result['title']} | within {GOAL_POINTS:g} point of original ({orig:.2f}) | "
                     f"{'met' if best and best['within_1_point'] else 'MISSED'} | "
                     + cell(best, f"{methods[best['method']][key] * 100:.2f} ({-best['drop_points']:+.1f}"
                            + (" vs its run's original" if "carried_original" in methods[best['method']] else "")
                            + ")" if best else "") + " |")
        best = _best(rows, lambda r: r["gap_closed"])
        kmeans = f"{methods['kmeans'][key] * 100:.2f}" if "kmeans" in methods else "not run"
        lines.append(f"| | gap to original closed >= 2/3 vs k-means ({kmeans}) | "
                     f"{'met' if best and best['gap_goal_met'] else 'MISSED'} | "
                     + cell(best, f"{best['gap_closed']:.0%}" if best else "") + " |")
        if "cosine" in methods["original"]:
            best = _best(rows, lambda r: r.get("cosine"))
            lines.append(f"| | mean cosine >= {GOAL_COSINE} | {'met' if best and best['cosine_goal_met'] else 'MISSED'} | "
                         + cell(best, f"{best['cosine']:.4f}" if best else "") + " |")
        winners = [r for r in rows if r["within_1_point"] and r.get("cosine_goal_met", True)]
        timed = _best(winners, lambda r: -r.get("lut_training_cpu_seconds", r["lut_training_seconds"]))
        timed = timed or _best(rows, lambda r: -r["drop_points"])
        in_budget = timed is not None and timed.get("within_budget_cpu", timed["within_budget"])
        which = "fastest method meeting the accuracy goals" if winners else "the most accurate method"
        lines.append(f"| | LUT training <= 15 min on 2 cores ({which}) | "
                     f"{'met' if in_budget else 'MISSED'} | " + cell(timed, _budget_text(timed) if timed else "") + " |")
        lines += goal_lines(result)
    lines.append("")
    return lines


def _peer_lines(orig: dict) -> list[str]:
    """The original model in PyTorch and ONNX Runtime (fp32, dynamic int8): accuracy and latency, or why not."""
    lines = []
    for row in orig.get("peers", {}).values():
        if "error" in row:
            lines.append(f"- {row['name']}: not measured: {row['error']}")
            continue
        lines.append(f"- {row['name']} (the original model, batch {row['batch']}, {row['threads']} thread(s), timed in "
                     f"its own process): accuracy {row['acc']:.2%}, {row['latency_ms']:.3f} ms / batch "
                     f"({row['latency_ms'] / orig['compiled']['latency_ms']:.2f}x dense TVM)")
    return [""] + lines if lines else []


def _task_section(result: dict) -> list[str]:
    if "skipped" in result:
        return [f"## {result['task']}: SKIPPED", "", f"Data or model unavailable offline: {result['skipped']}", ""]
    methods, key, unit = result["methods"], result["metric"], result["unit"]
    orig = methods["original"]
    has_cos = "cosine" in orig
    lines = [f"## {result['title']}", "", f"- data: {result['data']}", f"- model: {result['model']}"]
    if "distillation_data" in result:
        lines.append(f"- distillation data (eLUT-NN rows): {result['distillation_data']}")
    if "original_training" in result:
        tr = result["original_training"]
        how = "loaded from cache" if tr.get("cached") else f"trained in {tr.get('seconds', 0):.0f} s"
        lines.append(f"- original weights: {how} ({tr.get('epochs')} epochs, seed {tr.get('seed')})")
    luts = result.get("lut_layers")
    if luts:
        shapes = sorted({(layer["type"], layer["V"]) for layer in luts})
        lines.append(f"- LUT layers of the every-layer rows: {len(luts)} ({', '.join(f'{t} V={v}' for t, v in shapes)}; "
                     f"K = {luts[0]['K']})")
    env = result["environment"]
    load = env.get("loadavg_1min_start_end")
    lines.append(f"- wall time of the task (incl. data, original model, evaluation): {result['wall_seconds']:.0f} s; "
                 f"torch threads {env['threads']}"
                 + (f"; machine load average {load[0]:.1f} -> {load[1]:.1f} on {env.get('cpus')} cores "
                    "(shared machine: wall times include waiting for other processes)" if load else ""))
    compiled = "compiled" in orig
    if compiled:
        info = orig["compiled"]
        lines.append(f"- accuracy of every row: the model `lut_tvm.compile` builds (LUT rows: the exported plan, "
                     f"{info['batch']} samples a batch); the torch forward's in brackets where it differs. Latency: "
                     f"the whole compiled model, one batch of {info['batch']}, {info['threads']} thread(s), "
                     f"{info.get('timing', 'median')}")
    lines += ["", ("| method | topic acc | mean cosine | min cosine |" if has_cos else "| method | accuracy |")
              + (" compiled ms / batch |" if compiled else "")
              + " model bytes | LUT layers vs their fp32 weights | MFLOP / " + unit
              + " (dense + encode) | lookups / " + unit + " | training time |",
              "|---|---|" + ("---|---|" if has_cos else "") + ("---|" if compiled else "") + "---|---|---|---|---|"]
    for name, entry in methods.items():
        sizes, ops = entry.get("bytes", {}), entry.get("ops", {})
        acc = f"{entry[key]:.2%}"
        if name != "original":
            acc += f" ({(entry[key] - original_of(entry, orig[key])) * 100:+.1f})"
        if "acc_torch" in entry and abs(entry["acc_torch"] - entry[key]) > 1e-12:
            acc += f" [torch {entry['acc_torch']:.2%}]"
        cells = [_row_label(name, entry), acc]
        if has_cos:
            cells += [f"{entry['cosine']:.4f}", f"{entry['cosine_min']:.4f}"]
        if compiled:
            info = entry.get("compiled")
            cells.append("-" if info is None else
                         f"{info['latency_ms']:.3f}" + (f" ({info['latency_ms'] / orig['compiled']['latency_ms']:.2f}x "
                                                        "dense TVM)" if name != "original" else " (dense TVM)"))
        ratio = ""
        if "replaced_weights_fp32" in sizes:
            ratio = (f"{_mb(sizes['lut_layers'])} vs {_mb(sizes['replaced_weights_fp32'])} "
                     f"({sizes['replaced_weights_fp32'] / sizes['lut_layers']:.1f}x smaller)")
        flops = (f"{_mflops(ops['flops'])} ({_mflops(2 * ops['dense_macs'])} + {_mflops(2 * ops['encode_macs'])})"
                 if ops else "-")
        seconds = entry.get("seconds")
        cpu = f", CPU {entry['cpu_seconds']:.0f} s" if "cpu_seconds" in entry else ""
        if name == "original" or seconds is None:
            time_cell = "-"
        elif "kmeans_seconds" not in entry:
            time_cell = f"{seconds:.0f} s{cpu}" + (" incl. k-means" if name != "kmeans" else "")
        else:
            start = entry.get("training", {}).get("start", "kmeans").replace("kmeans", "k-means")
            time_cell = f"{seconds:.0f} s{cpu} (+ {start})"
        cells += [_mb(sizes["total"]) if sizes else "-", ratio or "-", flops,
                  f"{ops['lookups'] / 1e6:.3f} M" if ops.get("lookups") else "-", time_cell]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _peer_lines(orig)
    lines += optimize_section(result)
    lines.append("")
    for name, entry in methods.items():
        if "training" in entry:
            info = ", ".join(f"{k}={v}" for k, v in entry["training"].items())
            lines.append(f"- {_label(name)}: {info}")
    sens = result.get("sensitivity", {}).get("single_layer_cosine")
    if sens:
        ranked = sorted(sens.items(), key=lambda kv: kv[1])
        values = sorted(sens.values())
        lines += ["", f"Single-layer sensitivity (k-means centroids, one LUT layer at a time in the original "
                      f"model, {len(sens)} layers, first 96 held-out texts): mean cosine median "
                      f"{values[len(values) // 2]:.4f}, range {values[0]:.4f}-{values[-1]:.4f}; worst: "
                  + ", ".join(f"{n} {v:.4f}" for n, v in ranked[:5])
                  + ". Errors compound: all layers together give the k-means row above."]
    frontier = result.get("frontier")
    if frontier:
        lines += ["", "Frontier (eLUT-NN layer-wise model; the first n LUT layers in execution order kept, the "
                      "others back to the original dense layers; no end-to-end stage):", "",
                  "| LUT layers | topic acc | mean cosine |", "|---|---|---|"]
        lines += [f"| {row['lut_layers']} | {row['topic_acc']:.2%} ({(row['topic_acc'] - orig[key]) * 100:+.1f}) | "
                  f"{row['cosine']:.4f} |" for row in frontier]
    errors = methods.get("elut_layerwise", {}).get("layer_errors")
    if errors:
        lines += ["", "eLUT-NN layer-wise relative squared error per layer (k-means -> centroids -> weights), "
                      "worst five: " + ", ".join(
                          f"{e['layer'].replace('encoder.bert.encoder.', '')} {e['error_init']:.3f} -> "
                          f"{e['error_centroids']:.3f} -> {e['error_weights']:.3f}"
                          for e in sorted(errors, key=lambda e: -e["error_weights"])[:5])
                  + f"; median after: {sorted(e['error_weights'] for e in errors)[len(errors) // 2]:.3f}."]
    lines += ["", "Goals:", ""]
    for row in verdicts(result):
        closed = "n/a" if row["gap_closed"] is None else f"{row['gap_closed']:.0%}"
        parts = [f"{row['drop_points']:.1f} points below original "
                 f"({'within' if row['within_1_point'] else 'MISSES'} the 1-point goal)",
                 f"gap to original closed vs k-means: {closed} "
                 f"({'meets' if row['gap_goal_met'] else 'MISSES'} the 2/3 goal)"]
        if "cosine" in row:
            cos_closed = "n/a" if row["cosine_gap_closed"] is None else f"{row['cosine_gap_closed']:.0%}"
            parts.append(f"mean cosine {row['cosine']:.4f} ({'meets' if row['cosine_goal_met'] else 'MISSES'} "
                         f">= {GOAL_COSINE}; cosine gap closed {cos_closed})")
        parts.append(_budget_text(row))
        lines.append(f"- {_label(row['method'])}: " + "; ".join(parts))
    lines.append("")
    return lines


def write_plot(results: list[dict], path: Path) -> Path | None:
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("matplotlib is not installed (pip install -e .[bench]): no plot")
        return None
    done = [r for r in results if "skipped" not in r]
    if not done:
        return None
    fig, axes = plt.subplots(1, len(done), figsize=(max(4.6 * len(done), 8.0), 4.2), squeeze=False)
    for ax, result in zip(axes[0], done):
        methods = result["methods"]
        names = list(methods)
        keys = [result["metric"]] + (["cosine"] if "cosine" in methods["original"] else [])
        width = 0.8 / len(keys)
        for i, key in enumerate(keys):
            values = [methods[n][key] * 100 for n in names]
            xs = [j + (i - (len(keys) - 1) / 2) * width for j in range(len(names))]
            bars = ax.bar(xs, values, width, label="topic accuracy %" if key == "topic_acc" else
                          ("mean cosine x100" if key == "cosine" else "accuracy %"))
            for bar, value in zip(bars, values):
                ax.text(bar.get_x() + bar.get_width() / 2, value + 0.5, f"{value:.1f}", ha="center", fontsize=7)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace("reconstruction_", "recon ").replace("kmeans_ridge_w", "ridge W")
                            .replace("kmeans_ridge", "ridge").replace("kmeans", "k-means")
                            .replace("lutnn", "LUT-NN") for n in names], fontsize=7, rotation=20)
        ax.set_title(result["title"], fontsize=9)
        ax.set_ylim(0, 105)
        ax.axhline(methods["original"][result["metric"]] * 100 - 1, color="grey", lw=0.8, ls="--")
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Original vs k-means only vs learned LUT centroids (dashed line: original - 1 point)",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(results: list[dict], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = [{**r, "verdicts": verdicts(r)} if "skipped" not in r else r for r in results]
    json_path = out_dir / "accuracy.json"
    json_path.write_text(json.dumps(summary, indent=1, default=str))
    lines = ["# LUT-NN accuracy benchmark", "",
             "Generated by `benchmarks/accuracy` from the per-task results in `accuracy/`. All LUT models are "
             "measured in their hard, compiled form (argmin codes, INT8 tables with one scale per layer), except rows "
             "marked [per-column table scales] (one scale per output column: plan `table_quant=int8_per_column`). "
             "Tasks with a 'compiled ms' column (MNIST-1D, keyword spotting) are measured on the model "
             "`lut_tvm.compile` builds from each row's exported plan; the others on the torch hard forward, "
             "which computes the same codes and INT8 tables as the kernels.", "",
             "Measures: model bytes = fp32 parameters for the original; for a LUT model, INT8 tables + fp32 "
             "centroids + fp32 biases/scales of the LUT layers plus every other parameter in fp32. FLOPs = "
             "2 x MACs of Linear/Conv layers still dense + 2 x MACs of the LUT encode distance GEMM "
             "(C*K*V per row); lookups = C*N table reads (each with an int add) per row; work shared by both "
             "(attention matmuls, norms, pooling, activations) is not counted.", "",
             f"Goals: learned within {GOAL_POINTS:g} point of original; for MiniLM also mean cosine >= "
             f"{GOAL_COSINE}; gap to original closed by >= 2/3 vs k-means only; LUT training <= 15 min on 2 cores.",
             ""]
    lines += goals_section(results)
    for result in results:
        lines += _task_section(result)
    commands = sorted({r.get("command", "") for r in results})
    envs = sorted({f"torch {r['environment']['torch']}, {r['environment']['date']}" for r in results
                   if "environment" in r})
    lines += ["## Runs", ""] + [f"- `{c}`" for c in commands] + [f"- {e}" for e in envs] + [""]
    md_path = out_dir / "accuracy.md"
    plot = write_plot(results, out_dir / "accuracy.png")
    if plot is not None:
        lines.insert(2, "![accuracy](accuracy.png)\n")
    md_path.write_text("\n".join(lines))
    return [md_path, json_path] + ([plot] if plot else [])
