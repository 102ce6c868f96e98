"""The optimize rows in the accuracy report: issue 13's goals per task (met / MISSED) and each task's plan,
validation figures and latency against the other frameworks."""

from __future__ import annotations

from .optimize_method import FRAMEWORKS, plan_counts

GOAL_POINTS = 1.0
BUDGET_SECONDS = 15 * 60
LUT_MS = "lut optimize"


def _drop_points(original: float, value: float) -> float:
    return round((original - value) * 100, 6)  # 98.3 - 97.3 is 1.0000000000000009 in floats


def optimize_goals(result: dict) -> list[dict]:
    """Issue 13's goals for a task's optimize row: ``[{"goal", "met", "text"}]`` (empty without the row).

    * accuracy: the compiled plan's test accuracy within ``GOAL_POINTS`` of the original's, every LUT-able
      layer considered (``model_layers``: the model's Linear / Conv layers, all in the optimizer's report);
    * latency: the compiled plan's median latency reported with ONNX Runtime fp32 and int8 (met when all
      three were measured; the ratios say which is faster);
    * time: optimize (with its fine-tuning) within ``BUDGET_SECONDS`` of CPU time (the wall time, on a
      shared machine, beside it);
    * conv1d (models with Conv1d layers): at least one of them compiled as a LUT layer.
    """
    methods, key = result["methods"], result["metric"]
    row = methods.get("optimize")
    if row is None or "optimize" not in row:
        return []
    info, plan = row["optimize"], row["optimize"]["plan"]
    counts = plan_counts(plan)
    drop = _drop_points(methods["original"][key], row[key])
    model_layers = info.get("model_layers", [p["layer"] for p in plan])
    missing = sorted(set(model_layers) - {p["layer"] for p in plan})
    goals = [{"goal": "accuracy", "met": drop <= GOAL_POINTS and not missing,
              "text": (f"{row[key]:.2%} on test, compiled ({-drop:+.1f} points); {counts['lut']} LUT, {counts['int8']} int8, "
                       f"{counts['dense']} dense of {len(model_layers)} layers"
                       + (f"; not considered: {', '.join(missing)}" if missing else "; every layer considered"))}]
    ms = row.get("speed", {}).get("ms", {})
    lut_ms = ms.get(LUT_MS, ms.get("tvm_dense") if not counts["lut"] + counts["int8"] else None)
    peers = {name: ms.get(name) for name in ("ort_fp32", "ort_int8", "tvm_dense")}
    text = "; ".join([f"plan {lut_ms:.3f} ms" if lut_ms else "plan not timed"] + [
        f"{FRAMEWORKS[name]} {value:.3f} ms ({value / lut_ms:.2f}x the plan's time)" if value and lut_ms else
        f"{FRAMEWORKS[name]} not timed" for name, value in peers.items()])
    speed = row.get("speed", {})
    goals.append({"goal": "latency", "met": bool(lut_ms and peers["ort_fp32"] and peers["ort_int8"]),
                  "text": f"{text} (batch {speed.get('batch')}, {speed.get('threads')} thread)"})
    cpu, wall = row.get("cpu_seconds"), row.get("seconds")
    warm = info.get("settings", {}).get("warm_cache")
    goals.append({"goal": "time", "met": cpu is not None and cpu <= BUDGET_SECONDS and not warm,
                  "text": ("not timed" if cpu is None else f"optimize incl. fine-tuning: {cpu:.0f} s CPU, {wall:.0f} s wall")
                  + ("; not judged: a re-run on the measurements an earlier run cached" if warm else "")})
    conv1d = info.get("conv1d_layers") or []
    if conv1d:
        as_lut = [p["layer"] for p in plan if p["layer"] in conv1d and p["choice"].startswith("V=")]
        compiled = row.get("compiled", {}).get("lut_layers")
        goals.append({"goal": "conv1d", "met": bool(as_lut) and compiled == counts["lut"] + counts["int8"],
                      "text": f"{len(as_lut)} of {len(conv1d)} Conv1d layers as LUTs in the compiled model"
                              + (f" ({', '.join(as_lut)})" if as_lut else why_not_chosen(info, conv1d))
                              + f"; it bound {compiled} plan layer(s)"})
    return goals


def why_not_chosen(info: dict, names) -> str:
    """Why none of the layers ``names`` became a LUT, from the optimizer's candidates: the least loss of one
    alone on the validation split, and how many had no predicted saving (their loss is not measured)."""
    mine = [c for c in info.get("candidates", []) if c["layer"] in names and c["sub_len"] != "int8"]
    if not mine:
        return ""
    measured = [c for c in mine if c.get("loss_alone") is not None]
    text = f" ({len(mine) - len(measured)} of {len(mine)} of their LUT candidates predicted no faster than dense"
    if measured:
        best = min(measured, key=lambda c: c["loss_alone"])
        text += (f"; the least loss of one alone on validation: {best['loss_alone']:.2f} points, layer "
                 f"{best['layer']} V={best['sub_len']} ({best['tables']} tables)")
    return text + ")"


GOAL_TEXT = {"accuracy": f"optimize: within {GOAL_POINTS:g} point of original on test, every LUT-able layer considered",
             "latency": "optimize: whole-model latency vs ONNX Runtime fp32 and int8 reported",
             "time": "optimize + its training <= 15 min on 2 cores (CPU time)",
             "conv1d": "Conv1d layers compiled as LUTs (numbers from the compiled model)"}


def goal_lines(result: dict) -> list[str]:
    """The Goals table's rows of a task's optimize row."""
    return [f"| | {GOAL_TEXT[g['goal']]} | {'met' if g['met'] else 'MISSED'} | {g['text']} |"
            for g in optimize_goals(result)]


def optimize_section(result: dict) -> list[str]:
    """A task section's paragraph on its optimize row: settings, validation figures, plan, latency table."""
    row = result["methods"].get("optimize")
    if row is None or "optimize" not in row:
        return []
    info, settings = row["optimize"], row["optimize"]["settings"]
    tuned = info.get("finetune")
    lines = ["", f"lut_tvm.optimize{' (carried from the run of ' + row['carried_from'] + ')' if row.get('carried_from') else ''}: "
             f"budget {settings['budget']:g} points of accuracy on {settings['val_samples']} validation samples "
             f"({settings['val_split']}; the original was trained on them too), calibration "
             f"{settings['calibration_samples']} of the other {settings['fit_samples']} training samples, V offered "
             f"{settings['sub_lens']} (each layer: those dividing its D), int8 matmuls offered for Linears, target "
             f"{info.get('target', '?')}. Validation accuracy: original {info['val_original']:.2f}, plan "
             f"{info['val_chosen_search']:.2f} in the search, {info['val_chosen_compiled']:.2f} compiled"
             + (f"; fine-tuning {tuned['epochs']} epoch(s): {'kept' if tuned['kept'] else 'not kept'} "
                f"(compiled validation loss {tuned['compiled_loss']:.2f} points)" if tuned else "; no fine-tuning")
             + (f"; then layers the search left dense, each trained into the plan (compiled validation loss + margin): " + ", ".join(
                 f"{e['layer']} {e['option']} {e['guarded_loss']:.2f} ({'kept' if e['kept'] else 'rejected'})"
                 for e in info["finetune_extend"]) if info.get("finetune_extend") else "")
             + (f"; backed off after the compiled check: {', '.join(info['backed_off'])}" if info.get("backed_off") else "")
             + (" ; the chosen plan measured slower than dense and was dropped" if info.get("slower_than_dense") else "")
             + ".", "",
             "Plan: " + ", ".join(f"{p['layer']} ({p['shape']}) {p['choice']}" for p in info["plan"]) + "."]
    speed = row.get("speed")
    if speed and speed.get("ms"):
        base = speed["ms"].get(LUT_MS)
        lines += ["", f"Latency at this point ({speed['timing']}; batch {speed['batch']}, {speed['threads']} thread; "
                      f"load {speed['load_1min'][0]:.1f} -> {speed['load_1min'][1]:.1f}):", "",
                  "| framework | median ms / batch | vs the optimize plan | fastest sample ms (slowest) |",
                  "|---|---|---|---|"]
        for name, value in speed["ms"].items():
            ratio = f"{value / base:.2f}x its time" if base and name != LUT_MS else "-"
            spread = (f"{speed['min_ms'][name]:.3f} ({speed['max_ms'][name]:.3f})"
                      if name in speed.get("min_ms", {}) and name in speed.get("max_ms", {}) else "-")
            lines.append(f"| {FRAMEWORKS.get(name, name)} | {value:.3f} | {ratio} | {spread} |")
        if speed.get("failed"):
            lines.append("")
            lines.append("Not built: " + "; ".join(f"{k}: {v}" for k, v in speed["failed"].items()))
    return lines
