"""The tolerance rules of ``cure-zoo verify``: does a re-measured value uphold a claim?

Pure functions of numbers and per-image masks (no files, no models): the allowance ``b(n)`` for documented
nondeterminism, the widened 99% Wilson interval of the subset rule, and the verdict on one accuracy metric
or one derived metric. The rules themselves, and why they are what they are, are stated once, in
``docs/verify.md`` ("How tolerance works"); :mod:`.verify` finds the claims and writes the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

Z_99 = 2.5758293035489004  # two-sided 99% normal quantile
# b(n) = max(1, ceil(rate * n)) images, per metric (docs/verify.md)
ALLOWANCE_RATE = {"nat": 0.001, "pgd20": 0.002, "pgd100": 0.002, "cw20": 0.002, "aa": 0.005, "worst": 0.005}
DERIVED_INPUTS = {"nrr_cw": ("nat", "cw20"), "nrr_aa": ("nat", "aa"), "sum_aa": ("nat", "aa")}


def allowance(metric: str, n: int) -> int:
    """``b(n)``: images whose outcome may differ from the claim through documented nondeterminism."""
    base = metric.split("@")[0]
    return max(1, math.ceil(ALLOWANCE_RATE.get(base, 0.005) * n))


@dataclass
class Verdict:
    metric: str
    claimed: float  # percent, over the claim's images
    measured: float  # percent, over the images verified
    n: int  # images verified
    passed: bool
    rule: str  # which rule decided, in words
    detail: str = ""
    claimed_here: float | None = None  # the claim's own record restricted to the verified images
    allowed_images: int | None = None
    interval: list[float] | None = None  # subset rule: the accepted range for the claimed accuracy


def widened_wilson(correct: int, n: int, slack: int) -> tuple[float, float]:
    """The 99% Wilson interval of ``correct / n`` in percent, widened by ``slack / n`` on each side."""
    from ..evaluation import wilson_interval

    lo, hi = wilson_interval(correct, n, z=Z_99)
    pad = 100.0 * slack / n
    return max(0.0, lo - pad), min(100.0, hi + pad)


def judge_accuracy(
    metric: str,
    claim: dict[str, Any],
    claim_mask: torch.Tensor | None,
    positions: list[int] | None,
    measured_mask: torch.Tensor,
    same_images: bool,
) -> Verdict:
    """The verdict on one accuracy metric: ``claim`` (``accuracy``, ``correct``, ``n``), the claim's per-image
    record ``claim_mask`` (None without one) and the re-measured ``measured_mask``; ``positions``: where the
    verified images are in the claim's images (the subset rule). Rules 1-3 of docs/verify.md."""
    n = int(measured_mask.numel())
    k = int(measured_mask.sum())
    measured = 100.0 * k / n
    claimed = float(claim["accuracy"])
    b = allowance(metric, n)

    def verdict(passed: bool, rule: str, detail: str = "", **kw: Any) -> Verdict:
        return Verdict(metric, claimed, measured, n, passed, rule, detail, allowed_images=b, **kw)

    c_correct, c_n = int(claim["correct"]), int(claim["n"])
    if not (0 <= c_correct <= c_n) or abs(100.0 * c_correct / c_n - claimed) > 1e-6:
        return verdict(False, "claim consistency", f"claimed {claimed:.4f}% is not {c_correct}/{c_n}")
    if claim_mask is not None and int(claim_mask.sum()) != c_correct:
        return verdict(
            False,
            "claim consistency",
            f"claims {c_correct} correct but its per-image record has {int(claim_mask.sum())}",
        )
    if same_images:
        diff = k - c_correct
        flips = int((claim_mask != measured_mask).sum()) if claim_mask is not None else None
        detail = f"{k} vs {c_correct} correct" + (
            f"; {flips} images differ from the record" if flips is not None else ""
        )
        return verdict(abs(diff) <= b, f"same images: |difference| <= {b} image(s)", detail)
    lo, hi = widened_wilson(k, n, b)
    in_interval = lo <= claimed <= hi
    if claim_mask is None:
        return verdict(
            in_interval,
            f"subset: claim inside 99% interval widened by {b} image(s)",
            f"claimed {claimed:.2f}% vs accepted [{lo:.2f}, {hi:.2f}]",
            interval=[lo, hi],
        )
    here = claim_mask[positions]
    expected = int(here.sum())
    per_image = abs(k - expected) <= b
    detail = (
        f"{k} vs {expected} correct on these images in the claim's record; claimed {claimed:.2f}% vs accepted "
        f"[{lo:.2f}, {hi:.2f}]"
    )
    return verdict(
        per_image and in_interval,
        f"subset: record within {b} image(s) and claim inside 99% interval",
        detail,
        claimed_here=100.0 * expected / n,
        interval=[lo, hi],
    )


def judge_derived(metric: str, claimed: float, claims_acc: dict[str, dict], verdicts: dict[str, Verdict]) -> Verdict:
    """The verdict on a derived metric (NRR, SUM) from the verdicts on its inputs: rules 1 and 4 of
    docs/verify.md."""
    from ..evaluation import nrr

    fn = (lambda a, b: a + b) if metric.startswith("sum") else nrr
    a, b = DERIVED_INPUTS[metric]
    recomputed = fn(claims_acc[a]["accuracy"], claims_acc[b]["accuracy"])
    va, vb = verdicts[a], verdicts[b]
    measured = fn(va.measured, vb.measured)
    base = Verdict(metric, claimed, measured, va.n, False, "", "")
    if abs(recomputed - claimed) > 1e-6:
        base.rule, base.detail = "claim consistency", f"{claimed:.4f} != {recomputed:.4f} from the claimed accuracies"
        return base

    def bounds(v: Verdict) -> tuple[float, float]:
        if v.interval is not None:
            return v.interval[0], v.interval[1]
        pad = 100.0 * (v.allowed_images or 0) / v.n
        return max(0.0, v.measured - pad), min(100.0, v.measured + pad)

    (la, ha), (lb, hb) = bounds(va), bounds(vb)
    lo, hi = fn(la, lb), fn(ha, hb)
    base.passed = lo - 1e-9 <= claimed <= hi + 1e-9
    base.rule = f"within the range allowed for {a} and {b}"
    base.detail = f"claimed {claimed:.2f} vs accepted [{lo:.2f}, {hi:.2f}]"
    base.interval = [lo, hi]
    return base
