"""The zoo's metrics: accuracy with a Wilson 95% interval, the per-sample worst case, NRR and SUM.

Accuracies are in percent. NRR (the paper's App. F.2, Eq. 9) is the harmonic mean of natural and robust
accuracy, ``2 * Nat * Rob / (Nat + Rob)``; the paper's Tables 1, 2 and 4 use Rob = CW-inf, Tables 7 and 8
use Rob = AutoAttack, and Table 8's SUM is ``Nat + AA``. This module is the one place they are computed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

Z_95 = 1.959963984540054  # two-sided 95% normal quantile

# result key -> (display name: tables, plots, model-index; what it is): the one table of metric names
METRICS = {
    "nat": ("Nat", "clean accuracy"),
    "pgd20": ("PGD-20", "PGD on the cross-entropy, 20 steps"),
    "pgd100": ("PGD-100", "PGD on the cross-entropy, 100 steps"),
    "cw20": ("CW-inf", "PGD on the CW margin loss (the paper's C&W column)"),
    "aa": ("AutoAttack", "AutoAttack, standard version"),
    "worst": ("worst case", "per-sample worst case over the attacks run"),
    "nrr_cw": ("NRR (CW-inf)", "2*Nat*Rob/(Nat+Rob), Rob = CW-inf (paper Tables 1, 2)"),
    "nrr_aa": ("NRR (AA)", "2*Nat*Rob/(Nat+Rob), Rob = AutoAttack (paper Table 8)"),
    "sum_aa": ("SUM (AA)", "Nat + AutoAttack (paper Table 8)"),
}


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``correct / n``, in percent.

    Unlike the normal approximation it stays inside [0, 100] and is sensible at 0% and 100% (e.g. a
    natural model's 0/200 robust accuracy has the interval [0, 1.88]%)."""
    if n <= 0:
        raise ValueError("n must be positive")
    if not 0 <= correct <= n:
        raise ValueError(f"correct={correct} must lie in [0, n={n}]")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if correct == 0 else max(0.0, centre - half)  # exact ends: no 1e-16 from rounding
    hi = 1.0 if correct == n else min(1.0, centre + half)
    return lo * 100, hi * 100


def accuracy_summary(mask: torch.Tensor) -> dict[str, float | int | list[float]]:
    """``{"accuracy", "correct", "n", "ci95"}`` of a per-sample correctness mask."""
    n = int(mask.numel())
    correct = int(mask.sum())
    lo, hi = wilson_interval(correct, n)
    return {"accuracy": 100.0 * correct / n, "correct": correct, "n": n, "ci95": [lo, hi]}


def stage_summary(counts: Mapping[str, int], n: int, order: Sequence[str]) -> dict[str, dict[str, float | int]]:
    """AutoAttack's robust accuracy after each sub-attack from summed counts: ``{stage: {"correct",
    "accuracy"}}`` in ``order``, up to the last stage that ran anywhere (AutoAttack stops once nothing is
    robust, so a stage missing from some chunk counted 0 there)."""
    ran = [s for s in order if s in counts]
    last = order.index(ran[-1]) if ran else -1
    return {s: {"correct": int(counts.get(s, 0)), "accuracy": 100.0 * counts.get(s, 0) / n} for s in order[: last + 1]}


def sum_counts(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Per-key sums of count dictionaries (chunks or ranks of one evaluation)."""
    out: dict[str, int] = {}
    for part in parts:
        for key, count in part.items():
            out[key] = out.get(key, 0) + int(count)
    return out


def nrr(natural: float, robust: float) -> float:
    """Natural-Robustness Ratio: the harmonic mean ``2*N*R/(N+R)`` of two accuracies (0 if both are 0)."""
    return 0.0 if natural + robust == 0 else 2.0 * natural * robust / (natural + robust)


def worst_case(masks: Iterable[torch.Tensor]) -> torch.Tensor:
    """Per-sample worst case: a sample counts as correct only if it is correct under every mask."""
    masks = list(masks)
    if not masks:
        raise ValueError("worst_case needs at least one mask")
    out = masks[0].clone()
    for m in masks[1:]:
        out &= m
    return out


def summarise(
    masks: Mapping[str, torch.Tensor],
    times: Mapping[str, float] | None = None,
    worst_over: Sequence[str] = (),
) -> tuple[dict[str, Any], torch.Tensor | None]:
    """The ``results`` block of an evaluation from its per-attack masks, and the worst-case mask.

    Per attack: :func:`accuracy_summary` (+ ``time_s`` from ``times``). ``worst`` (over ``worst_over``, when
    given); ``nrr_cw`` = NRR(nat, cw20), ``nrr_aa`` = NRR(nat, aa) and ``sum_aa`` = nat + aa where both ran."""
    results: dict[str, Any] = {}
    for name, mask in masks.items():
        results[name] = accuracy_summary(mask)
        if times is not None and name in times:
            results[name]["time_s"] = round(float(times[name]), 3)
    worst = None
    if worst_over:
        worst = worst_case(masks[name] for name in worst_over)
        results["worst"] = dict(accuracy_summary(worst), over=list(worst_over))
    if "nat" in results:
        nat = results["nat"]["accuracy"]
        if "cw20" in results:
            results["nrr_cw"] = nrr(nat, results["cw20"]["accuracy"])
        if "aa" in results:
            results["nrr_aa"] = nrr(nat, results["aa"]["accuracy"])
            results["sum_aa"] = nat + results["aa"]["accuracy"]
    return results, worst
