"""The exact (LUT-NA) section of ``speed.md``: kernels per look-up form and bit width, the VGG-11 plans."""

from __future__ import annotations

PEERS = {"pytorch": "PyTorch", "ort_fp32": "ORT fp32", "ort_int8": "ORT int8 dyn",
         "ort_int8_static": "ORT int8 static", "tvm_dense": "TVM dense"}


def _peer_head(unit: str) -> str:
    return " | ".join(f"{title} {unit}" for title in PEERS.values())


def _ratio_head(first: str) -> str:
    return " | ".join(f"{first} {title}" if i == 0 else f"vs {title}" for i, title in enumerate(PEERS.values()))


def _cases(cases, exact_kind: str) -> list[dict]:
    return [c for c in cases if c["kind"] == "exact" and c.get("exact_kind") == exact_kind]


def _result(timings, threads, case) -> dict | None:
    return timings.get(threads, {}).get("cases", {}).get(case["key"])


def _check(result, label) -> dict | None:
    return (result.get("exact_check") or {}).get(label)


def _time(result, name, scale, digits, label=None) -> str:
    """A time cell; an exact variant whose output differs from the reference says so."""
    value = result["ms"].get(name)
    if value is None:
        return "-"
    check = _check(result, label) if label else None
    wrong = check is not None and not check["bit_exact"]
    return f"{value * scale:.{digits}f}" + (" **WRONG OUTPUT**" if wrong else "")


def _ratio(result, lut, peer) -> str:
    a, b = result["ms"].get(lut), result["ms"].get(peer)
    return f"{b / a:.2f}x" if a and b else "-"


def _exact_cell(result, labels) -> str:
    checks = [(label, _check(result, label)) for label in labels]
    if any(c is None for _, c in checks):
        return "not checked"
    bad = [(label, c) for label, c in checks if not c["bit_exact"]]
    if not bad:
        return f"yes ({len(checks)}/{len(checks)})"
    return "**NO**: " + ", ".join(f"{label} (max abs diff {c['max_abs_diff']})" for label, c in bad)


def _layer(info: dict) -> str:
    return f"{info['group']} {info['name']}" + (f" ({info['shape']})" if info["kernel"] else "")


def _kernel_table(cases, timings, threads) -> list[str]:
    if not _cases(cases, "kernel"):
        return []
    forms = {}
    for case in _cases(cases, "kernel"):
        forms.update({v["form"]: v for v in case["lut_variants"].values()})
    titles = list(forms)
    lines = [f"#### Exact kernels, {threads} thread(s): median us per call", "",
             "| layer | M x D x N | bits | " + " | ".join(f"{f} us" for f in titles) + f" | {_peer_head('us')} | "
             f"{_ratio_head('fastest form vs')} | bit-exact vs reference |",
             "|" + "---|" * (4 + len(titles) + 2 * len(PEERS))]
    for case in _cases(cases, "kernel"):
        result = _result(timings, threads, case)
        if result is None:
            continue
        info = case["case"]
        for bits in sorted({v["bits"]["layer"] for v in case["lut_variants"].values()}):
            labels = [f"{f} b={bits}" for f in titles if f"{f} b={bits}" in case["lut_variants"]]
            timed = [label for label in labels if f"lut {label}" in result["ms"]]
            best = min(timed, key=lambda label: result["ms"][f"lut {label}"]) if timed else None
            cells = [_time(result, f"lut {f} b={bits}", 1e3, 0, f"{f} b={bits}") for f in titles]
            ratios = [_ratio(result, f"lut {best}", p) if best else "-" for p in PEERS]
            lines.append(f"| {_layer(info)} | {info['rows']} x {info['depth']} x "
                         f"{info['out_ch']} | {bits} | " + " | ".join(cells) + " | "
                         + " | ".join(_time(result, p, 1e3, 0) for p in PEERS) + " | "
                         + (f"{best.split()[0]}: " if best else "") + " | ".join(ratios) + f" | "
                         f"{_exact_cell(result, labels)} |")
    return lines + [""]


def _model_table(cases, timings, threads) -> list[str]:
    if not _cases(cases, "model"):
        return []
    lines = [f"#### Exact whole model, {threads} thread(s): median ms per call", "",
             f"| model (batch) | plan | bits per layer (mean) | exact LUT ms | {_peer_head('ms')} | "
             f"{_ratio_head('vs')} | exact kernels' share | bit-exact vs reference |",
             "|" + "---|" * (6 + 2 * len(PEERS))]
    for case in _cases(cases, "model"):
        result = _result(timings, threads, case)
        if result is None:
            continue
        for label, variant in case["lut_variants"].items():
            profile = result.get("lut_profile", {}).get(label) or {}
            share = (f"{profile['exact_ms'] / profile['total_ms']:.0%}"
                     if profile.get("total_ms") and "exact_ms" in profile else "-")
            bits = " ".join(str(b) for b in variant["bits"].values())
            lines.append(f"| {case['name']} ({case['batch']}) | {label} | {bits} ({variant['mean_bits']:.2f}) | "
                         f"{_time(result, f'lut {label}', 1, 2, label)} | "
                         + " | ".join(_time(result, p, 1, 2) for p in PEERS) + " | "
                         + " | ".join(_ratio(result, f"lut {label}", p) for p in PEERS)
                         + f" | {share} | {_exact_cell(result, [label])} |")
    return lines + [""]


def _peer_text(ms: dict, scale: float, unit: str) -> str:
    """``PyTorch 762 us, ORT fp32 ..., ORT int8 dyn ...`` for the peers that ran."""
    return ", ".join(f"{title} {ms[name] * scale:.{0 if unit == 'us' else 1}f} {unit}"
                     for name, title in PEERS.items() if ms.get(name))


def _kernel_summary(case, result) -> str | None:
    parts = []
    for bits in (4, 8):
        times = {v["form"]: result["ms"].get(f"lut {label}") for label, v in case["lut_variants"].items()
                 if v["bits"]["layer"] == bits}
        times = {form: t for form, t in times.items() if t}
        if not times:
            continue
        best = min(times, key=times.get)
        slower = ", ".join(f"{form} {t / times[best]:.1f}x slower" for form, t in times.items() if form != best)
        parts.append(f"b={bits}: {best} {times[best] * 1e3:.0f} us ({slower})")
    if not parts:
        return None
    return f"{_layer(case['case'])}: " + "; ".join(parts) + f" vs {_peer_text(result['ms'], 1e3, 'us')}."


def _model_summary(case, result) -> str | None:
    full, mixed = result["ms"].get("lut int8"), result["ms"].get("lut mixed")
    if not (full and mixed):
        return None
    fastest = min((name for name in PEERS if result["ms"].get(name)), key=lambda n: result["ms"][n], default=None)
    text = (f"{case['name']}: the mixed plan runs in {mixed:.1f} ms, {full / mixed:.2f}x faster than the all-8-bit "
            f"plan ({full:.1f} ms), vs {_peer_text(result['ms'], 1, 'ms')}")
    if fastest:
        text += (f"; the fastest peer ({PEERS[fastest]}) is {mixed / result['ms'][fastest]:.1f}x faster than "
                 "the mixed plan")
    return text + "."


def _summary(cases, timings, threads) -> list[str]:
    """The result in a few sentences, from the numbers at ``threads``."""
    text = []
    for case in _cases(cases, "kernel") + _cases(cases, "model"):
        result = _result(timings, threads, case)
        if result is not None:
            line = (_kernel_summary if case.get("exact_kind") == "kernel" else _model_summary)(case, result)
            text += [line] if line else []
    if not text:
        return []
    return [f"Result ({threads} thread(s)): " + " ".join(text), ""]


def _notes(cases) -> list[str]:
    lines = []
    for case in _cases(cases, "kernel")[:1]:
        forms = "; ".join(f"{f['key']} = {f['title']}, target `{f['target']}`" for f in case.get("forms", []))
        lines.append(f"- Look-up forms (chosen by the target, the rewrite's `auto` look-up): {forms}. The AVX-512BW "
                     "byte shuffle (vpshufb zmm) is not reachable through `lut_tvm.compile`: with AVX-512BW the word "
                     "form is always taken.")
        lines.append(f"- Kernel weights: {case.get('weights')}; inputs: {case.get('data')}. Activations int8 per "
                     "tensor, weights per channel at the given bits (`lut_tvm.exact.quantize_model`).")
    for case in _cases(cases, "model"):
        lines.append(f"- {case['name']}: weights {case['weights']}; input {case['input_shape']} from {case['data']}; "
                     "compiled for the native target. Plans: "
                     + "; ".join(f"{label}: {v['plan_note']}" for label, v in case["lut_variants"].items())
                     + ". Layers in order: " + ", ".join(f"`{n}`" for n in case.get("layers", [])) + ".")
    for case in _cases(cases, "kernel") + _cases(cases, "model"):
        for name, err in case.get("failed", {}).items():
            lines.append(f"- {case['name']}: {name} not built: {err}")
    return lines + [""] if lines else []


def exact_lines(cases, timings) -> list[str]:
    """The ``## Exact (LUT-NA) mode`` section, or nothing when the group did not run."""
    if not any(c["kind"] == "exact" for c in cases):
        return []
    lines = ["## Exact (LUT-NA) mode", "",
             "LUT-NA's exact mode (`lut_tvm.exact`): int8 activations, per-channel b-bit weights, the product computed "
             "by bit-plane table look-ups and shift-and-add, equal to the integer GEMM bit for bit. Each compiled "
             "output is compared with the integer reference (`QuantizedTorchModel`, what `benchmarks.lutna` proves "
             "against) in every timing worker: 'bit-exact' says whether it matched exactly. Ratios = peer time / exact "
             "LUT time (> 1: exact LUT faster). ORT int8 dyn = `quantize_dynamic` (int8 weights, activations quantized "
             "per call; ConvInteger for convs); ORT int8 static = `quantize_static` (QDQ, per-channel int8 weights, "
             "int8 activations calibrated on the case's calibration inputs: what `benchmarks.lutna` compares with). "
             "Every time is a median of interleaved samples, as in the rest of this report.", ""]
    lines += _notes(cases)
    lines += _summary(cases, timings, min(timings)) if timings else []
    for threads in sorted(timings):
        lines += _kernel_table(cases, timings, threads)
        lines += _model_table(cases, timings, threads)
    return lines
