"""Robust Gradient Prominence (paper Eq. 6) and the per-tensor gradient masks built from it.

For every masked parameter tensor W (CURE paper, Sec. 4, Eq. 6; App. A, Algorithm 1 lines 19-20)::

    s_W = alpha * |g_nat[W]| + (1 - alpha) * |g_adv[W]|         # element-wise score ('rgp', the paper)
    tau = percentile(s_W, p)                                     # linear interpolation, as numpy's
    grad[W][s_W < tau] = 0                                       # about p % of W's entries

The percentile is NumPy's linear interpolation between the two order statistics around ``(n - 1) q``,
bit for bit (ties included). On an accelerator both come from one ``torch.sort`` on the device, with no host
synchronisation (``kthvalue`` there runs one thread block per tensor, pytorch/pytorch#75599, and
``torch.quantile`` refuses tensors above 16M elements). On the CPU two order statistics of a random sample
of the scores bracket the two wanted ones, a few vectorised passes count the entries below the bracket and
gather those inside it, and ``np.partition`` (introselect) selects among those few; when the bracket misses,
the whole tensor is partitioned. That is several times faster than a sort or ``kthvalue`` there
(``benchmarks/bench_rgp_percentile.py``).

``rgp_soft`` reproduces the official code's masking for comparison: the score is *signed*,
``alpha * g_nat + (1 - alpha) * g_kl`` (the gradient of the TRADES KL, not of CE on x_adv), and only the
first convolution of each residual block is masked (``*conv1*`` parameters other than the stem).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

_BRACKET_SAMPLE = 8192  # sampled scores per tensor: the bracket then holds a few % of the entries
_BRACKET_MIN_ENTRIES = 1 << 16  # below this a partition of the whole tensor is as fast


def bracketed_order_statistics(
    flat: torch.Tensor, lo: int, hi: int, sample: int = _BRACKET_SAMPLE
) -> torch.Tensor | None:
    """The ``lo``-th and ``hi``-th smallest entries of the 1-d CPU tensor ``flat`` (``lo <= hi``), found by
    bracketing them between two order statistics of a random sample of ``sample`` entries (Floyd-Rivest) and
    partitioning only the entries inside the bracket; None when the bracket misses either of them (the caller
    then partitions the whole tensor).

    Exact whatever the sample: the entries below the bracket are counted, so the ranks inside it are known, and
    a miss is detected, never guessed. The sample's generator is fixed, so the same scores take the same path.
    """
    n = flat.numel()
    idx = torch.randint(n, (sample,), generator=torch.Generator().manual_seed(n))
    q = lo / n
    # a sample rank's spread is sqrt(sample q (1 - q)): 4 of them either side make a miss rare
    margin = 4.0 * math.sqrt(sample * q * (1.0 - q)) + 4
    ranks = (max(int(q * sample - margin), 0), min(int(hi / n * sample + margin) + 1, sample - 1))
    low, high = torch.from_numpy(np.partition(flat[idx].numpy(), ranks)[list(ranks)]).unbind()
    below = int((flat < low).sum())  # NaN is neither below nor inside: NumPy sorts it last
    if below > lo:
        return None
    if low == high:  # inside the bracket every entry is ``low``
        return torch.stack([low, low]) if n - below - int((flat > high).sum()) > hi - below else None
    inside = flat[(flat >= low) & (flat <= high)].numpy()
    if inside.size <= hi - below:
        return None
    k = (lo - below, hi - below)
    part = np.partition(inside, k if k[0] != k[1] else k[0])
    return torch.from_numpy(part[list(k)])


SELECTIONS = ("sort", "bracket", "partition")


def order_statistics(flat: torch.Tensor, lo: int, hi: int, selection: str | None = None) -> torch.Tensor:
    """The ``lo``-th and ``hi``-th smallest entries (0-based, ties counted, ``lo <= hi``) of the 1-d ``flat``,
    as a 2-element tensor on ``flat``'s device.

    ``selection``: ``sort``, one ``torch.sort`` on ``flat``'s device (the default off the CPU); ``bracket``,
    :func:`bracketed_order_statistics` on the host for tensors of at least 65536 entries, else as
    ``partition`` (the default on the CPU); ``partition``, ``np.partition`` of the whole tensor on the host.
    """
    if selection is None:
        selection = "sort" if flat.device.type != "cpu" else "bracket"
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}: choose one of {', '.join(SELECTIONS)}")
    if selection == "sort":
        ordered = torch.sort(flat).values
        return torch.stack([ordered[lo], ordered[hi]])
    host = flat.detach().cpu()
    found = None
    if selection == "bracket" and host.numel() >= _BRACKET_MIN_ENTRIES:
        found = bracketed_order_statistics(host, lo, hi)
    if found is None:
        found = torch.from_numpy(np.partition(host.numpy(), (lo, hi) if hi != lo else lo)[[lo, hi]])
    return found.to(flat.device)


def percentile(values: torch.Tensor, q: float, selection: str | None = None) -> torch.Tensor:
    """``np.percentile(values, q)`` (method 'linear') as a 0-dim tensor on ``values``' device, bit-equal.

    As NumPy: ``h = (n - 1) (q / 100)``, ``a, b`` the sorted values at ``floor(h)`` and ``floor(h) + 1``
    (both the last value when ``h >= n - 1``), ``t = h - floor(h)`` and the result ``a + (b - a) t``, or
    ``b - (b - a) (1 - t)`` when ``t >= 0.5``, in ``values``' dtype. ``selection``: see :func:`order_statistics`.
    """
    flat = values.reshape(-1)
    n = flat.numel()
    h = (n - 1) * (q / 100.0)
    lo = min(math.floor(h), n - 1)
    hi = min(lo + 1, n - 1)
    t = h - math.floor(h)
    a, b = order_statistics(flat, lo, hi, selection).unbind()
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def masked_parameter_names(model: nn.Module, masking: str) -> list[str]:
    """Names of the parameter tensors whose gradients are masked.

    ``rgp``: every parameter except the final classifier (weight and bias), stem, shortcuts and BatchNorm
    included (CURE paper, Algorithm 1 line 19: every layer). ``rgp_soft``: parameters with ``conv1`` in their
    name, except the first parameter (the stem), as the official code selects them. ``none``: nothing.
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


def rgp_drop(score: torch.Tensor, p: float) -> torch.Tensor:
    """The entries the mask zeroes: ``score < percentile(score, p)`` (strict, so ties at the threshold pass)."""
    return score < percentile(score, p)


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
    tensor's scores. ``g_nat``/``g_other`` are consumed. Returns the number of zeroed entries of each tensor
    (a 1-d int64 device tensor, no synchronisation)."""
    zeroed = []
    for grad, gn, go in zip(grads, g_nat, g_other, strict=True):
        drop = rgp_drop(rgp_score_(gn, go, alpha, signed), p)
        grad.masked_fill_(drop, 0.0)
        zeroed.append(drop.sum())
    if not zeroed:
        return torch.zeros(0, dtype=torch.int64)
    return torch.stack(zeroed)
