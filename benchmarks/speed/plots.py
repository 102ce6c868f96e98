"""The speed figures: LUT speedups per case and thread count, and accuracy vs latency."""

from __future__ import annotations

from pathlib import Path

from lut_tvm.files import save_figure

from .goals import PEER_NAMES, case_name, lut_rows, speedup


def _pyplot():
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("matplotlib is not installed (pip install -e .[bench]): no plot")
        return None
    return plt


def write_speed_plot(cases: list[dict], timings: dict, path: Path) -> Path | None:
    """Horizontal bars: LUT speedup over each peer (log scale), one panel per thread count."""
    plt = _pyplot()
    if plt is None or not timings:
        return None
    threads = sorted(timings)
    rows = {t: [(case, label, result) for kind in ("kernels", "models")
                for case, label, result in lut_rows(cases, timings, t, kind)] for t in threads}
    count = max(len(r) for r in rows.values()) or 1
    fig, axes = plt.subplots(1, len(threads), figsize=(6.8 * len(threads), 2.2 + 0.36 * count), squeeze=False,
                             sharey=True)
    peers = list(PEER_NAMES)
    height = 0.8 / len(peers)
    for ax, t in zip(axes[0], threads):
        labels = []
        for i, (case, label, result) in enumerate(rows[t]):
            group = case["case"]["group"] if case["kind"] == "kernels" else "model"
            labels.append(f"{group}: {case_name(case)[:26]} {label}")
            for j, peer in enumerate(peers):
                value = speedup(result, label, peer)
                if value:
                    ax.barh(i + (j - (len(peers) - 1) / 2) * height, value, height, color=f"C{j}",
                            label=PEER_NAMES[peer] if i == 0 else None)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", lw=0.8)
        for goal, style in ((8.0, ":"), (3.0, "--"), (1.5, "-.")):
            ax.axvline(goal, color="grey", lw=0.7, ls=style)
        ax.set_xlabel("LUT speedup (peer time / LUT time; > 1 = LUT faster)")
        ax.set_title(f"{t} thread(s)", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].invert_yaxis()  # the y axis is shared: invert it once, first case on top
    fig.suptitle("LUT vs PyTorch fp32, ORT fp32, ORT int8, TVM dense (grey: goals 8x, 3x, 1.5x)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def write_accuracy_plot(points: dict, path: Path) -> Path | None:
    """Accuracy vs one-thread latency per model; latency-only points as dotted vertical lines."""
    plt = _pyplot()
    if plt is None or not points:
        return None
    fig, axes = plt.subplots(1, len(points), figsize=(6.2 * len(points), 4.4), squeeze=False)
    colors = {"fp32": "C0", "int8": "C1", "LUT": "C2"}
    for ax, (model, data) in zip(axes[0], points.items()):
        for k, point in enumerate(data["points"]):
            color = colors[point["family"]]
            if point["accuracy"] is None:
                ax.axvline(point["latency_ms"], color=color, ls=":", lw=1)
                ax.text(point["latency_ms"], 0.02 + 0.06 * (k % 4), f" {point['label']}\n (no accuracy)",
                        fontsize=6, color=color, transform=ax.get_xaxis_transform())
                continue
            marker = "s" if "learned" in point["label"] else ("^" if point["family"] == "int8" else "o")
            ax.scatter(point["latency_ms"], point["accuracy"] * 100, color=color, marker=marker, zorder=3)
            ax.annotate(point["label"], (point["latency_ms"], point["accuracy"] * 100), fontsize=6,
                        xytext=(4, 2 - 8 * (k % 2)), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("latency, 1 thread (ms, median)")
        ax.set_ylabel(("topic accuracy" if data["metric"] == "topic_acc" else "accuracy") + " (%)")
        ax.set_ylim(0, 105)
        ax.set_title(model, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle("Accuracy vs latency: fp32 (blue), ORT int8 (orange), LUT (green; squares: learned centroids)",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
