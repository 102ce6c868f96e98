"""``speed.md`` and ``speed.json`` from the prepared cases and the timings per thread count."""

from __future__ import annotations

from pathlib import Path

from .accuracy_points import accuracy_points
from .exact_report import exact_lines
from .goals import PEER_NAMES, case_name, evaluate_goals, lookup_fraction, lut_rows, speedup
from .plots import write_accuracy_plot, write_speed_plot
from .zoo import zoo_lines
from lut_tvm.files import write_json_atomic, write_text_atomic

LOAD_WARNING = 1.5
PEERS = list(PEER_NAMES)


def _ms(result: dict, name: str, scale: float = 1.0, digits: int = 1) -> str:
    value = result["ms"].get(name)
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _x(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _sched(label: str) -> str:
    return "tuned" if label.startswith("tuned") else "default"


def _kernel_tables(cases, timings, threads, peak) -> list[str]:
    head = ("| group | layer (count) | shape | M x D x N | V (C) | sched LUT / dense | LUT us | PyTorch us | "
            "ORT fp32 us | ORT int8 us | TVM dense us | LUT vs PyTorch | vs ORT fp32 | vs ORT int8 | vs TVM dense |")
    lines = [f"### Kernels, {threads} thread(s): median us per call", "", head, "|" + "---|" * 15]
    speed = ["", f"Throughput, {threads} thread(s): GFLOP/s(-equivalent) = 2 M D N / time; lookups = M N C; "
             "encode share and lookup kernel time from the VM's per-kernel profile (instrumented run).", "",
             "| layer | LUT GFLOP/s-eq | PyTorch | ORT fp32 | ORT int8 | TVM dense | encode share | "
             "lookup kernel Glookup/s | % of shuffle peak |", "|" + "---|" * 9]
    for case, label, result in lut_rows(cases, timings, threads, "kernels"):
        info = case["case"]
        sub_len = int(label.split("=")[1])
        lines.append(
            f"| {info['group']} | {info['name']} (x{info['count']}) | {info['shape']} | "
            f"{info['rows']} x {info['depth']} x {info['out_ch']} | {sub_len} ({info['depth'] // sub_len}) | "
            f"{_sched(case['lut_variants'][label]['schedule'])} / {_sched(case['schedules'].get('tvm_dense', 'n/a'))} | "
            f"{_ms(result, f'lut {label}', 1e3)} | " + " | ".join(_ms(result, p, 1e3) for p in PEERS) + " | "
            + " | ".join(_x(speedup(result, label, p)) for p in PEERS) + " |")
        flops = info["flops"]
        gflops = {name: flops / (ms / 1e3) / 1e9 for name, ms in result["ms"].items()}
        profile = result.get("lut_profile", {}).get(label) or {}
        frac = lookup_fraction(case, label, result, peak, threads)
        rate = (case["lookups"][label] / (profile["lookup_ms"] / 1e3) / 1e9) if frac is not None else None
        speed.append(f"| {info['group']} {info['name']} | {gflops.get(f'lut {label}', 0):.1f} | "
                     + " | ".join(f"{gflops[p]:.1f}" if p in gflops else "-" for p in PEERS)
                     + f" | {_pct(profile.get('encode_share'))} | {'-' if rate is None else f'{rate:.2f}'} | "
                       f"{_pct(frac)} |")
    missing = [c for c in cases if c["kind"] == "kernels" and not c.get("lut_variants")]
    for case in missing:
        lines.append(f"| {case['case']['group']} | {case['case']['name']} | {case['case']['shape']} | | | | "
                     f"LUT not built: {case['failed'].get('lut') or next(iter(case['failed'].values()), '?')} |"
                     + " |" * 8)
    return lines + speed + [""]


def _model_tables(cases, timings, threads) -> list[str]:
    lines = [f"### Whole models, {threads} thread(s): median ms per call", "",
             "| model | LUT plan | LUT ms | PyTorch ms | ORT fp32 ms | ORT int8 ms | TVM dense ms | LUT vs PyTorch | "
             "vs ORT fp32 | vs ORT int8 | vs TVM dense | LUT time in encode / lookup / rest |", "|" + "---|" * 12]
    for case, label, result in lut_rows(cases, timings, threads, "models"):
        plan = case["lut_variants"][label]["plan"]
        profile = result.get("lut_profile", {}).get(label) or {}
        total = profile.get("total_ms") or 0
        split = (f"{profile['encode_ms'] / total:.0%} / {profile['lookup_ms'] / total:.0%} / "
                 f"{profile['other_ms'] / total:.0%}") if total else "-"
        lines.append(f"| {case['name']} (batch {case['batch']}) | {label}: {plan['layers']} layers "
                     f"({_sched(case['lut_variants'][label]['schedule'])}) | {_ms(result, f'lut {label}', digits=2)} | "
                     + " | ".join(_ms(result, p, digits=2) for p in PEERS) + " | "
                     + " | ".join(_x(speedup(result, label, p)) for p in PEERS) + f" | {split} |")
    return lines + [""]


def _plan_lines(cases) -> list[str]:
    lines = ["### LUT plans of the whole models", ""]
    for case in cases:
        if case["kind"] != "models":
            continue
        lines.append(f"- **{case['name']}** (weights: {case.get('weights', 'packaged')}; input "
                     f"{case['input_shape']}; calibration/data: {case.get('data')}):")
        for label, variant in case.get("lut_variants", {}).items():
            plan = variant["plan"]
            vs = ", ".join(f"V={v}: {n}" for v, n in plan["V"].items())
            lines.append(f"  - {label}: {plan['layers']} LUT layers ({vs}; K = {plan['K']}); "
                         f"schedule: {variant['schedule']}. Layers: " + ", ".join(plan["names"]))
        for name, err in case.get("failed", {}).items():
            lines.append(f"  - {name} not built: {err}")
    return lines + [""]


def _goal_lines(threads, goals) -> list[str]:
    lines = ["## Goals", "", f"Measured at {threads} thread(s). Ratio = peer time / LUT time.", "",
             "| goal | measured | verdict |", "|---|---|---|"]
    for goal in goals:
        unit = goal["unit"]
        cells = ", ".join(f"{m['case']} {m['variant']}: " + (f"{m['value']:.2f}x" if unit == "x" else f"{m['value']:.1%}")
                          for m in goal["measured"]) or "-"
        lines.append(f"| {goal['goal']} | {cells} ({goal['summary']}) | **{goal['verdict']}** |")
    lines.append("")
    for goal in goals:
        if goal["why"]:
            lines.append(f"Why **{goal['goal']}** is {goal['verdict']}:")
            lines += [f"- {why}" for why in goal["why"]]
            lines.append("")
    return lines


def _accuracy_lines(points: dict) -> list[str]:
    lines = ["## Accuracy vs latency", "", "![accuracy vs latency](speed_accuracy.png)", "",
             "Latency: 1 thread, median, this run. Accuracy: `benchmarks/results/accuracy/*.json` where it exists; "
             "for the digits CNN, ORT fp32 / int8 and the compiled k-means LUT models are also measured here on the "
             "held-out test set.", "", "| model | point | latency ms | accuracy | accuracy source |", "|---|---|---|---|---|"]
    for model, data in points.items():
        for p in data["points"]:
            acc = "-" if p["accuracy"] is None else f"{p['accuracy']:.2%}"
            lines.append(f"| {model} | {p['label']} | {p['latency_ms']:.2f} | {acc} | {p['source'] or 'none'} |")
    return lines + [""]


def _header(machine, versions, peak, settings, case_count: int) -> list[str]:
    load = max(machine["loadavg_start"][0], machine["loadavg_end"][0])
    lines = ["# Speed benchmark: LUT vs PyTorch, ONNX Runtime and TVM dense", ""]
    if settings["quick"]:
        lines += ["**QUICK RUN** (`--quick`): a subset of cases and tiny repeat counts; the numbers mean nothing.", ""]
    if load > LOAD_WARNING:
        lines += [f"**Measured under load**: 1-minute load average {machine['loadavg_start'][0]:.1f} at the start "
                  f"and {machine['loadavg_end'][0]:.1f} at the end on {machine['cpus']} cores (other jobs were "
                  "running); each framework group ran in its own process, their rounds interleaved, so the load "
                  "reached each alike, but expect +-30% or more run to run.", ""]
    lines += [
        f"- command: `{settings['command']}` ({settings['date']}; wall time: build {settings['build_seconds']:.0f} s, "
        f"total {settings['wall_seconds']:.0f} s"
        + (f"; CPU time of the run and its workers {settings['cpu_seconds']:.0f} s)" if "cpu_seconds" in settings
           else ")")
        + (f". Artifacts of {settings['reused_cases']} of {case_count} cases were built by an earlier run with "
           "the same code and reused from `--work`: only the timing ran" if settings.get("reused_cases") else ""),
        f"- CPU: {machine['cpu_model']}, {machine['cpus']} cores, {machine['cpu_mhz']} MHz; flags: "
        f"{', '.join(machine['flags'])}; kernel {machine['kernel']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- threads: {', '.join(map(str, settings['threads']))}; one process per thread count and framework group "
        "(PyTorch; each ONNX Runtime session: fp32, int8; TVM dense + LUT), so no framework runs beside another's "
        "idle spinning pool: "
        "TVM_NUM_THREADS and OMP_NUM_THREADS set, torch.set_num_threads, ORT intra_op_num_threads; no thread "
        "pinned to a core (TVM_BIND_THREADS=0, as ORT and PyTorch do by default). A framework "
        "that ran more than 10% slower at N threads than at 1 gets no N-thread ratio (listed below the tables)",
        f"- timing: median of {settings['rounds']} samples per framework and case, each sample the mean of as many "
        f"calls as fill {settings['min_sample_s'] * 1e3:.0f} ms; the frameworks interleaved round by round, "
        "across their processes (a 50 ms pause before each block when threads > 1)",
        "- peers: PyTorch fp32 (eager, inference_mode), ONNX Runtime fp32 and int8 (`quantize_dynamic`, int8 "
        "weights) of the same model exported to ONNX, TVM dense = `lut_tvm.compile` with no plan; LUT = "
        "`lut_tvm.compile` with a k-means plan (K = 16), encode included. 'sched' says whether a shipped tuning "
        "log scheduled any function (tuned) or the default rules did all (default)",
        f"- shuffle peak: {peak['text']} (x threads for more than one)",
        "",
    ]
    return lines


def write_report(cases, timings, machine, versions, peak, settings, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"settings": settings, "machine": machine, "versions": versions, "shuffle_peak": peak,
               "cases": [{**c, "results": {str(t): timings[t]["cases"].get(c["key"]) for t in sorted(timings)}}
                         for c in cases],
               "worker_loadavg_end": {str(t): timings[t].get("loadavg_end") for t in sorted(timings)}}
    json_path = out_dir / "speed.json"
    write_json_atomic(json_path, payload)  # the measurements first: the rest can be re-rendered from them
    threads, goals = evaluate_goals(cases, timings, peak["lookups_per_s"])
    one = timings.get(threads, {}).get("cases", {})
    points = accuracy_points(cases, {k: v["ms"] for k, v in one.items()})
    speed_png = write_speed_plot(cases, timings, out_dir / "speed.png")
    accuracy_png = write_accuracy_plot(points, out_dir / "speed_accuracy.png")
    lines = _header(machine, versions, peak, settings, len(cases))
    if speed_png:
        lines += ["![LUT speedups](speed.png)", ""]
    lines += _goal_lines(threads, goals)
    if any(c["kind"] == "kernels" for c in cases):
        lines += ["## Kernels", "",
                  "Each layer compiled alone as a one-layer model through `lut_tvm.compile` (LUT: encode + "
                  "lookup/accumulate + epilogue), inputs and k-means calibration rows random normal (speed does not "
                  "depend on values; the LUT output error against PyTorch is therefore large and meaningless). "
                  "MiniLM linears M = 128; digits CNN convs at batch 16 on 20x20; ResNet-18 convs at batch 1 on "
                  "32x32 (CIFAR stem). (xN) = layers of that shape in the model.", ""]
        for t in sorted(timings):
            lines += _kernel_tables(cases, timings, t, peak["lookups_per_s"])
    if any(c["kind"] == "models" for c in cases):
        lines += ["## Whole models", ""]
        for t in sorted(timings):
            lines += _model_tables(cases, timings, t)
        lines += _plan_lines(cases)
    lines += exact_lines(cases, timings)
    lines += zoo_lines(cases, timings)
    if points:
        lines += _accuracy_lines(points)
    regressions = [(case_name(c), t, n, ms) for t in sorted(timings) for c in cases
                   for n, ms in timings[t]["cases"].get(c["key"], {}).get("slower_than_one_thread", {}).items()]
    if regressions:
        lines += ["## Slower with more threads (no ratio given)", "",
                  "Frameworks whose median at N threads was more than 10% above their 1-thread median: their "
                  "N-thread time is not a measure of their N-thread speed, so a peer's is left out of the tables "
                  "(a LUT variant's stays, with this note).", ""]
        lines += [f"- {c}, {t} threads: {n} {a:.3f} ms vs {b:.3f} ms at 1 thread" for c, t, n, (a, b) in regressions]
        lines += [""]
    failures = [((f"{c['case']['group']} " if c["kind"] == "kernels" else "") + case_name(c), n, e)
                for c in cases for n, e in c.get("failed", {}).items()]
    if failures:
        lines += ["## Not built", ""] + [f"- {c}: {n}: {e}" for c, n, e in failures] + [""]
    errors = [(case_name(c), t, n, e) for t in sorted(timings) for c in cases
              for n, e in timings[t]["cases"].get(c["key"], {}).get("relative_error_vs_pytorch", {}).items()
              if n in ("ort_fp32", "tvm_dense") and e > 1e-3]
    if errors:
        lines += ["## Output checks that failed", "", "fp32 peers whose output differs from PyTorch's by more than "
                  "1e-3 (relative to the largest output):", ""]
        lines += [f"- {c} ({t} thread(s)): {n} {e:.2e}" for c, t, n, e in errors] + [""]
    payload.update({"goals": {"threads": threads, "goals": goals}, "accuracy_vs_latency": points})
    write_json_atomic(json_path, payload)
    md_path = out_dir / "speed.md"
    write_text_atomic(md_path, "\n".join(lines))
    return [md_path, json_path] + [p for p in (speed_png, accuracy_png) if p]


def read_raw(json_path: Path):
    """``write_report``'s arguments back from a ``speed.json`` it wrote (to re-render the report)."""
    import json  # pylint: disable=import-outside-toplevel

    data = json.loads(Path(json_path).read_text())
    cases = [{k: v for k, v in case.items() if k != "results"} for case in data["cases"]]
    timings = {int(t): {"cases": {c["key"]: c["results"][t] for c in data["cases"] if c["results"].get(t)},
                        "loadavg_end": data["worker_loadavg_end"].get(t)}
               for t in data["worker_loadavg_end"]}
    return cases, timings, data["machine"], data["versions"], data["shuffle_peak"], data["settings"]
