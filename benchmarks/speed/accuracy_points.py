"""Accuracy-vs-latency points: accuracy from ``benchmarks/results/accuracy/*.json`` (and the digits
accuracies measured by this benchmark), latency (one thread) measured here."""

from __future__ import annotations

import json
from pathlib import Path

ACCURACY_DIR = Path(__file__).resolve().parents[1] / "results" / "accuracy"
TASK_FILES = {"digits CNN": "digits.json", "all-MiniLM-L6-v2": "minilm.json"}
METHOD_TITLES = {"kmeans": "LUT k-means", "lutnn": "LUT learned (LUT-NN)",
                 "kmeans_ridge": "LUT k-means + ridge tables", "kmeans_ridge_w": "LUT k-means + ridge weight"}


def method_title(method: str) -> str:
    """A plot label for an accuracy-benchmark method (``reconstruction_1%`` -> learned, reconstruction 1%)."""
    if method in METHOD_TITLES:
        return METHOD_TITLES[method]
    return f"LUT learned ({method.replace('_', ' ')})" if method.startswith("reconstruction") else f"LUT {method}"


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return None if "skipped" in data else data


def _json_v_label(task: dict) -> str:
    """The plan variant label (``V=9/4``, ``V=16``) that matches the accuracy run's LUT layers."""
    values = sorted({layer["V"] for layer in task.get("lut_layers", [])}, reverse=True)
    return "V=" + "/".join(str(v) for v in values)


def accuracy_points(cases: list[dict], result_ms: dict, accuracy_dir: Path = ACCURACY_DIR) -> dict:
    """``{model: {"metric", "points": [{label, family, latency_ms, accuracy, source}]}}``.

    ``result_ms[key]`` is the one-thread median ms per framework of a model case. Points with no
    accuracy anywhere keep ``accuracy: None`` (drawn as latency-only marks).
    """
    out = {}
    for case in cases:
        if case["kind"] != "models" or case["key"] not in result_ms:
            continue
        ms = result_ms[case["key"]]
        name = case["name"]
        task = _read(accuracy_dir / TASK_FILES.get(name, "-"))
        metric = task["metric"] if task else "acc"
        source = f"accuracy/{TASK_FILES.get(name)}"
        points = []
        original = task["methods"]["original"][metric] if task else None
        points.append({"label": "fp32 PyTorch", "family": "fp32", "latency_ms": ms.get("pytorch"),
                       "accuracy": original, "source": source if task else None})
        here = case.get("accuracy_here", {})
        points.append({"label": "fp32 ORT", "family": "fp32", "latency_ms": ms.get("ort_fp32"),
                       "accuracy": here.get("ort_fp32", original),
                       "source": "measured here" if "ort_fp32" in here else (source if task else None)})
        points.append({"label": "int8 ORT (dynamic)", "family": "int8", "latency_ms": ms.get("ort_int8"),
                       "accuracy": here.get("ort_int8"), "source": "measured here" if "ort_int8" in here else None})
        json_label = _json_v_label(task) if task else None
        for label in case.get("lut_variants", {}):
            lat = ms.get(f"lut {label}")
            if f"lut {label}" in here:
                points.append({"label": f"LUT k-means {label} (compiled)", "family": "LUT", "latency_ms": lat,
                               "accuracy": here[f"lut {label}"], "source": "measured here (compiled)"})
            if task and label == json_label:
                for method, row in task["methods"].items():
                    if method != "original" and metric in row:
                        points.append({"label": f"{method_title(method)} {label}", "family": "LUT",
                                       "latency_ms": lat, "accuracy": row[metric], "source": source})
            elif f"lut {label}" not in here:
                points.append({"label": f"LUT {label}", "family": "LUT", "latency_ms": lat, "accuracy": None,
                               "source": None})
        out[name] = {"metric": metric, "points": [p for p in points if p["latency_ms"]]}
    return out
