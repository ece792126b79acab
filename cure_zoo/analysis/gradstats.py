"""The gradient statistics a training run logged (``run.grad_stats_every``; paper Sec. 5, Fig. 6 and App. D.3,
Fig. 10), read back from its ``metrics.jsonl`` and drawn per layer at the early, middle and late phases of
training: the mean gradient magnitude (Fig. 6a) and the percentage of entries updated, i.e. not zeroed by the
RGP mask (Fig. 6b, 10), or, for a method without the mask, the percentage that would pass it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CureZooError
from ..rundir import METRICS_FILE, read_metrics
from .figures import pyplot, save_png

PHASES = ("early", "middle", "late")


def grad_stats_records(records: list[dict[str, Any]], where: str | Path = METRICS_FILE) -> list[dict[str, Any]]:
    """Every gradient-statistics record of the metrics.jsonl ``records``, in step order, each checked (step,
    epoch, kind, p, per tensor its mean magnitude and share); a record this version cannot read is one
    CureZooError naming ``where``."""
    out = []
    for record in records:
        for g in record.get("grad_stats") or []:
            if not _readable(g):
                raise CureZooError(f"{where} holds gradient statistics this version cannot read; is the file damaged?")
            out.append(g)
    return sorted(out, key=lambda g: g["global_step"])


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _readable(g: Any) -> bool:
    if not isinstance(g, dict) or g.get("kind") not in ("updated", "would_pass"):
        return False
    if not all(isinstance(g.get(k), int) for k in ("global_step", "epoch")) or not _number(g.get("p")):
        return False
    tensors, share = g.get("tensors"), f"{g['kind']}_pct"
    return isinstance(tensors, dict) and all(
        isinstance(t, dict) and _number(t.get("grad_abs_mean")) and _number(t.get(share)) for t in tensors.values()
    )


def load_grad_stats(run_dir: str | Path) -> list[dict[str, Any]]:
    """The gradient-statistics records of a run directory; a CureZooError says what is missing."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise CureZooError(f"{run_dir} has no {METRICS_FILE}; pass a training run directory")
    stats = grad_stats_records(read_metrics(run_dir), path)
    if not stats:
        raise CureZooError(
            f"{path} holds no gradient statistics; train with --set run.grad_stats_every=N (steps between records)"
        )
    return stats


def phases(stats: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{"early": first record, "middle": the median one, "late": the last}``, fewer when there are fewer
    than three records."""
    if not stats:
        return {}
    picks = {"early": 0, "middle": (len(stats) - 1) // 2, "late": len(stats) - 1}
    out, seen = {}, set()
    for phase in PHASES:
        i = picks[phase]
        if i not in seen:
            seen.add(i)
            out[phase] = stats[i]
    return out


def share_key(record: dict[str, Any]) -> str:
    return f"{record['kind']}_pct"


def phase_table(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The figure's numbers as JSON: per phase, its step and epoch and per tensor the two statistics."""
    return {
        "records": len(stats),
        "phases": {
            phase: {
                "global_step": r["global_step"],
                "epoch": r["epoch"],
                "kind": r["kind"],
                "p": r["p"],
                "tensors": r["tensors"],
            }
            for phase, r in phases(stats).items()
        },  # fmt: skip
    }


def plot_grad_stats(stats: list[dict[str, Any]], path: str | Path, title: str) -> Path | None:
    """Two panels per layer (parameter tensor): mean |gradient| and the updated (or would-pass) percentage,
    one series per phase. ``None`` (nothing written) without records."""
    chosen = phases(stats)
    if not chosen:
        return None
    names = list(next(iter(chosen.values()))["tensors"])
    plt = pyplot()
    width = min(max(6.4, 0.16 * len(names) + 2.0), 16.0)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, 6.4), sharex=True)
    x = range(len(names))
    colors = {"early": "tab:blue", "middle": "tab:green", "late": "tab:red"}
    kinds = set()
    for phase, record in chosen.items():
        label = f"{phase} (step {record['global_step']}, epoch {record['epoch']})"
        tensors = record["tensors"]
        key = share_key(record)
        kinds.add(record["kind"])
        top.plot(x, [tensors.get(n, {}).get("grad_abs_mean", float("nan")) for n in names], marker="o", ms=2.5,
                 lw=1, color=colors[phase], label=label)  # fmt: skip
        bottom.plot(x, [tensors.get(n, {}).get(key, float("nan")) for n in names], marker="o", ms=2.5, lw=1,
                    color=colors[phase], label=label)  # fmt: skip
    top.set_yscale("log")
    top.set_ylabel("mean |gradient|")
    what = "updated (not masked by RGP)" if kinds == {"updated"} else "would pass the RGP mask"
    if len(kinds) > 1:
        what = "updated / would pass RGP"
    p = next(iter(chosen.values()))["p"]
    bottom.set_ylabel(f"% of entries {what}", fontsize=8)
    bottom.set_ylim(0, 105)
    bottom.axhline(100 - p, color="grey", ls=":", lw=1)
    bottom.set_xticks(list(x))
    bottom.set_xticklabels(names, rotation=90, fontsize=5 if len(names) > 30 else 7)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend(fontsize=7)
    top.set_title(f"{title}\nper parameter tensor; dotted: 100 - p = {100 - p:g}%", fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)


def plot_grad_magnitude(runs: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """Fig. 6a's comparison: per run (label -> records), the mean |gradient| over training, averaged over the
    parameter tensors of each record."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, stats in runs.items():
        steps = [r["global_step"] for r in stats]
        means = [sum(t["grad_abs_mean"] for t in r["tensors"].values()) / max(len(r["tensors"]), 1) for r in stats]
        ax.plot(steps, means, marker="o" if len(steps) < 30 else None, ms=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean |gradient| (average over tensors)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Gradient magnitude during training", fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)
