"""Robust Gradient Prominence (paper Eq. 6) and the per-tensor gradient masks built from it.

For every masked parameter tensor W (spec D5-D8)::

    s_W = alpha * |g_nat[W]| + (1 - alpha) * |g_adv[W]|         # element-wise score ('rgp', the paper)
    tau = percentile(s_W, p)                                     # linear interpolation, as numpy's
    grad[W][s_W < tau] = 0                                       # about p % of W's entries

Everything runs on the gradients' device with no host synchronisation: the percentile comes from
``kthvalue`` plus one comparison pass (``torch.quantile`` refuses tensors above 16M elements and sorts).

``rgp_soft`` reproduces the official code's masking for comparison: the score is *signed*,
``alpha * g_nat + (1 - alpha) * g_kl`` (the gradient of the TRADES KL, not of CE on x_adv), and only the
first convolution of each residual block is masked (``*conv1*`` parameters other than the stem).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``np.percentile(values, q)`` (linear interpolation) as a 0-dim tensor on ``values``' device.

    With ``h = (n - 1) q / 100`` and ``lo = floor(h)`` it is ``v[lo] + (h - lo) (v[lo + 1] - v[lo])`` of the
    sorted values. ``v[lo]`` comes from ``kthvalue``; ``v[lo + 1]`` is ``v[lo]`` again when more than
    ``lo + 1`` values are ``<= v[lo]`` (ties), else the smallest value above it.
    """
    flat = values.reshape(-1)
    n = flat.numel()
    h = (n - 1) * q / 100.0
    lo = min(int(math.floor(h)), n - 1)
    frac = h - lo
    v_lo = flat.kthvalue(lo + 1).values
    if frac == 0.0 or lo + 1 >= n:
        return v_lo
    greater = flat > v_lo  # one comparison pass serves both the next value and the tie count
    above = torch.where(greater, flat, float("inf")).amin()
    v_hi = torch.where(n - greater.sum() > lo + 1, v_lo, above)
    return v_lo + frac * (v_hi - v_lo)


def masked_parameter_names(model: nn.Module, masking: str) -> list[str]:
    """Names of the parameter tensors whose gradients are masked.

    ``rgp``: every parameter except the final classifier (weight and bias), stem, shortcuts and BatchNorm
    included (spec D6). ``rgp_soft``: parameters with ``conv1`` in their name, except the first parameter
    (the stem), as the official code selects them. ``none``: nothing.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if masking == "none":
        return []
    if masking == "rgp_soft":
        return [n for i, (n, _) in enumerate(named) if i > 0 and "conv1" in n]
    if masking == "rgp":
        classifier = {id(p) for p in model.get_classifier().parameters()}
        return [n for n, p in named if id(p) not in classifier]
    raise ValueError(f"unknown masking {masking!r}")


def rgp_score_(g_nat: torch.Tensor, g_other: torch.Tensor, alpha: float, signed: bool = False) -> torch.Tensor:
    """The score ``alpha * |g_nat| + (1 - alpha) * |g_other|`` (signed: without the absolute values),
    computed in ``g_nat``'s storage (both inputs are consumed)."""
    if not signed:
        g_nat.abs_()
        g_other.abs_()
    return g_nat.mul_(alpha).add_(g_other, alpha=1.0 - alpha)


@torch.no_grad()
def apply_rgp_masks_(
    grads: list[torch.Tensor],
    g_nat: list[torch.Tensor],
    g_other: list[torch.Tensor],
    *,
    alpha: float,
    p: float,
    signed: bool = False,
) -> torch.Tensor:
    """Zero, in place, the entries of each ``grads[i]`` whose score is below the p-th percentile of that
    tensor's scores. ``g_nat``/``g_other`` are consumed. Returns the number of zeroed entries (a device
    scalar, no synchronisation)."""
    zeroed = torch.zeros((), dtype=torch.int64, device=grads[0].device if grads else "cpu")
    for grad, gn, go in zip(grads, g_nat, g_other, strict=True):
        score = rgp_score_(gn, go, alpha, signed)
        drop = score < percentile(score, p)
        grad.masked_fill_(drop, 0.0)
        zeroed += drop.sum()
    return zeroed
