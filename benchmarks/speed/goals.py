"""The speed goals (single thread) checked against the measurements, each with the reason when missed.

Goals, from the issue: LUT linears at V = 16 at least 8x PyTorch fp32 and 1.5x ONNX Runtime int8;
LUT convs at V = 9 / 4 at least 3x PyTorch fp32; lookups at least 50% of the shuffle peak; the
whole MiniLM at least 3x ONNX Runtime fp32 and faster than ONNX Runtime int8.
"""

from __future__ import annotations

import statistics

PEER_NAMES = {"pytorch": "PyTorch fp32", "ort_fp32": "ORT fp32", "ort_int8": "ORT int8", "tvm_dense": "TVM dense"}


def lut_rows(cases: list[dict], timings: dict, threads: int, kind: str):
    """``(case, variant label, result)`` for every LUT variant measured at ``threads``."""
    cases_at = timings.get(threads, {}).get("cases", {})
    for case in cases:
        if case["kind"] != kind or case["key"] not in cases_at:
            continue
        result = cases_at[case["key"]]
        for label in case.get("lut_variants", {}):
            if f"lut {label}" in result["ms"]:
                yield case, label, result


def speedup(result: dict, label: str, peer: str) -> float | None:
    """How many times faster the LUT variant ran than ``peer`` (peer time / LUT time)."""
    lut, other = result["ms"].get(f"lut {label}"), result["ms"].get(peer)
    return other / lut if lut and other else None


def lookup_fraction(case: dict, label: str, result: dict, peak: float, threads: int) -> float | None:
    """Lookups per second of the lookup kernel as a fraction of the shuffle peak of ``threads`` cores."""
    profile = result.get("lut_profile", {}).get(label)
    count = case.get("lookups", {}).get(label)
    if not profile or not count or not profile["lookup_ms"]:
        return None
    return count / (profile["lookup_ms"] / 1e3) / (peak * threads)


def case_name(case: dict) -> str:
    return case["case"]["name"] if case["kind"] == "kernels" else case["name"]


def _kernel_why(case, label, result, peak, threads, peer) -> str:
    profile = result.get("lut_profile", {}).get(label) or {}
    lut_us = result["ms"][f"lut {label}"] * 1e3
    parts = [f"{case_name(case)}: LUT {lut_us:.0f} us"]
    if profile:
        frac = lookup_fraction(case, label, result, peak, threads)
        lookup_kernel = next((n for n, _ in profile["top"] if n.startswith("lut_lookup")), "?")
        parts.append(f"(instrumented: encode {profile['encode_ms'] * 1e3:.0f} us = "
                     f"{profile['encode_share']:.0%} of the layer, lookup {profile['lookup_ms'] * 1e3:.0f} us in "
                     f"`{lookup_kernel}`" + (f" at {frac:.1%} of the shuffle peak" if frac is not None else "") + ")")
    peer_ms = result["ms"].get(peer)
    if peer_ms:
        parts.append(f"vs {PEER_NAMES[peer]} {peer_ms * 1e3:.0f} us "
                     f"({case['case']['flops'] / (peer_ms / 1e3) / 1e9:.0f} GFLOP/s)")
    sched = case["lut_variants"][label]["schedule"]
    if sched == "default rules":
        parts[-1] += "; LUT kernels untuned (default rules: no shipped tuning log matches this shape)"
    return " ".join(parts)


def _ratio_goal(cases, timings, threads, peak, title, target, peer, select) -> dict:
    measured, whys = [], []
    for case, label, result in lut_rows(cases, timings, threads, "kernels"):
        if not select(case, label):
            continue
        value = speedup(result, label, peer)
        if value is None:
            continue
        measured.append({"case": case_name(case), "variant": label, "value": round(value, 3),
                         "met": value >= target})
        if value < target:
            whys.append(_kernel_why(case, label, result, peak, threads, peer))
    return _verdict(title, target, "x", measured, whys)


def _verdict(title, target, unit, measured, whys) -> dict:
    met = sum(m["met"] for m in measured)
    if not measured:
        verdict = "not measured"
    elif met == len(measured):
        verdict = "met"
    elif met:
        verdict = f"partly met ({met} of {len(measured)})"
    else:
        verdict = "missed"
    values = [m["value"] for m in measured if m["value"] > 0]
    summary = (f"geomean {statistics.geometric_mean(values):.2f}{unit}, range {min(values):.2f}-{max(values):.2f}{unit}"
               if values and unit == "x" else
               (f"median {statistics.median(values):.1%}, best {max(values):.1%}" if values else "-"))
    return {"goal": title, "target": target, "unit": unit, "measured": measured, "summary": summary,
            "verdict": verdict, "why": whys}


def _is_dense(case, label) -> bool:
    return not case["case"]["kernel"] and label == "V=16"


def _is_conv_default_v(case, label) -> bool:
    return bool(case["case"]["kernel"]) and label in ("V=9", "V=4")


def _model_goal(cases, timings, threads, title, target, peer) -> dict:
    measured, whys = [], []
    for case, label, result in lut_rows(cases, timings, threads, "models"):
        if case["name"] != "all-MiniLM-L6-v2":
            continue
        value = speedup(result, label, peer)
        if value is None:
            continue
        measured.append({"case": case["name"], "variant": label, "value": round(value, 3), "met": value >= target})
        if value < target:
            whys.append(model_why(case, label, result, peer))
    return _verdict(title, target, "x", measured, whys)


def model_why(case, label, result, peer) -> str:
    profile = result.get("lut_profile", {}).get(label)
    lut_ms, peer_ms = result["ms"][f"lut {label}"], result["ms"][peer]
    text = f"{case['name']} {label}: LUT {lut_ms:.1f} ms vs {PEER_NAMES[peer]} {peer_ms:.1f} ms"
    if profile and profile["total_ms"]:
        total = profile["total_ms"]
        text += (f"; instrumented LUT model {total:.1f} ms: encode {profile['encode_ms']:.1f} ms "
                 f"({profile['encode_ms'] / total:.0%}), lookup {profile['lookup_ms']:.1f} ms "
                 f"({profile['lookup_ms'] / total:.0%}), everything else (attention matmuls, softmax, "
                 f"LayerNorm, GELU, embeddings: TVM default schedules) {profile['other_ms']:.1f} ms "
                 f"({profile['other_ms'] / total:.0%})")
        if profile["other_ms"] > peer_ms / 3:
            text += (f"; the non-LUT part alone takes {profile['other_ms'] / peer_ms:.1f}x {PEER_NAMES[peer]}'s "
                     "whole model, so the goal cannot be met by faster LUT kernels alone")
    return text


def _lookup_goal(cases, timings, threads, peak) -> dict:
    measured, whys, kernels = [], [], {}
    for case, label, result in lut_rows(cases, timings, threads, "kernels"):
        frac = lookup_fraction(case, label, result, peak, threads)
        if frac is None:
            continue
        measured.append({"case": case_name(case), "variant": label, "value": round(frac, 4), "met": frac >= 0.5})
        for name, _ in result["lut_profile"][label]["top"]:
            if name.startswith("lut_lookup"):
                kernels.setdefault(name, []).append(case_name(case))
    if measured and not all(m["met"] for m in measured):
        worst = sorted(measured, key=lambda m: m["value"])[:3]
        gathers = [name for name in kernels if "shuffle" not in name]
        whys.append("lowest: " + ", ".join(f"{m['case']} {m['value']:.1%}" for m in worst)
                    + ". Lookup kernels run: " + ", ".join(f"`{n}` ({len(c)} cases)" for n, c in kernels.items())
                    + (f"; {', '.join(gathers)} gather table rows instead of using the byte shuffle"
                       if gathers else "; all use the byte shuffle")
                    + ". The lookup kernel's time also holds the int16/int32 accumulation, the scale/bias(/ReLU) "
                      "epilogue and the fp32 output stores, which the peak does not count.")
    return _verdict("lookups >= 50% of the shuffle peak (lookup kernel time, per core)", 0.5, "%", measured, whys)


def evaluate_goals(cases: list[dict], timings: dict, peak: float) -> tuple[int, list[dict]]:
    """``(threads used, goals)``: the goals at one thread (else the fewest threads measured)."""
    threads = 1 if 1 in timings else min(timings)
    goals = [
        _ratio_goal(cases, timings, threads, peak, "LUT linears at V=16 >= 8x PyTorch fp32", 8.0, "pytorch", _is_dense),
        _ratio_goal(cases, timings, threads, peak, "LUT linears at V=16 >= 1.5x ORT int8", 1.5, "ort_int8", _is_dense),
        _ratio_goal(cases, timings, threads, peak, "LUT convs at V=9/4 >= 3x PyTorch fp32", 3.0, "pytorch",
                    _is_conv_default_v),
        _lookup_goal(cases, timings, threads, peak),
        _model_goal(cases, timings, threads, "whole MiniLM >= 3x ORT fp32", 3.0, "ort_fp32"),
        _model_goal(cases, timings, threads, "whole MiniLM faster than ORT int8", 1.0, "ort_int8"),
    ]
    return threads, goals
