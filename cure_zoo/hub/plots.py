"""The model card's figures (PNG, matplotlib's Agg backend, written atomically):

* ``training_curves.png``: natural and PGD test accuracy per epoch from ``metrics.jsonl``, with the best
  robust epoch marked, so robust overfitting (the paper's Table 3 delta) is visible;
* ``tradeoff.png``: natural vs robust accuracy of the model among the paper's baselines for the same
  architecture and dataset (reported numbers, labelled as such).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..analysis.figures import pyplot, save_png
from ..evaluation.metrics import METRICS
from .paper_results import PaperRow


def epoch_curves(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """``{"nat_acc": [(epoch, %), ...], "pgd20_acc": [...]}`` from metrics.jsonl records with an ``eval``."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for key, value in (record.get("eval") or {}).items():
            if key.endswith("_acc"):
                curves.setdefault(key, []).append((int(record["epoch"]), float(value)))
    return curves


def plot_training_curves(records: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Natural and PGD accuracy per epoch; ``None`` (nothing written) when no epoch was evaluated."""
    curves = epoch_curves(records)
    if not curves:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for key, points in sorted(curves.items(), key=lambda kv: kv[0] != "nat_acc"):
        metric = key.removesuffix("_acc")  # pgd20 -> PGD-20 (METRICS); another step count -> PGD-N
        label = "natural" if key == "nat_acc" else METRICS.get(metric, (metric.upper().replace("PGD", "PGD-"),))[0]
        epochs, values = zip(*points, strict=True)
        ax.plot(epochs, values, marker="o" if len(points) < 30 else None, ms=3, label=label)
    robust = next((k for k in curves if k != "nat_acc"), None)
    if robust:
        best_epoch, best = max(curves[robust], key=lambda p: p[1])
        last_epoch, last = curves[robust][-1]
        ax.axvline(best_epoch, color="grey", ls=":", lw=1)
        ax.set_title(
            f"{title}\nbest {robust[:-4]} {best:.2f}% at epoch {best_epoch}; last {last:.2f}% (epoch {last_epoch})",
            fontsize=9,
        )
    else:
        ax.set_title(title, fontsize=9)
    n = next((r["eval"].get("n") for r in records if r.get("eval")), None)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 100)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)" + (f", {n} held-out images" if n else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)


def plot_tradeoff(
    model_point: tuple[float, float],
    model_label: str,
    baselines: list[PaperRow],
    robust_metric: str,
    table: int,
    path: Path,
    *,
    model_n: int | None = None,
) -> Path:
    """Natural vs ``robust_metric`` accuracy: the model (measured) among the paper's rows (reported)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    markers = "osD^vP<>Xhp8"
    colors = ["tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan"]
    for i, row in enumerate(baselines):
        cure = row.method.startswith("CURE")
        ax.scatter(
            [row.metrics[robust_metric]],
            [row.metrics["nat"]],
            marker=markers[i % len(markers)],
            s=36,
            color="tab:orange" if cure else colors[i % len(colors)],
            edgecolors="black",
            linewidths=0.4,
            zorder=2,
            label=f"{row.method} (paper)",
        )
    measured = f"{model_label} (measured" + (f", n={model_n})" if model_n else ")")
    ax.scatter(
        [model_point[1]],
        [model_point[0]],
        marker="*",
        s=220,
        color="tab:red",
        edgecolors="black",
        linewidths=0.5,
        zorder=3,
        label=measured,
    )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    axis = METRICS.get(robust_metric, (robust_metric,))[0]
    ax.set_xlabel(f"robust accuracy, {axis} (%)")
    ax.set_ylabel("natural accuracy (%)")
    ax.set_title(f"Trade-off: dots are reported in the paper (Table {table}); star is measured", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)
