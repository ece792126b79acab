"""Gradient statistics during training (paper Sec. 5, Fig. 6 and App. D.3, Fig. 10).

Every ``run.grad_stats_every`` optimizer steps (0, the default: never) the trainer records, per trainable
parameter tensor, from the gradient the optimizer is about to apply (averaged over processes, after the mask):

* ``grad_abs_mean``: the mean of its absolute values (Fig. 6a);
* ``updated_pct``: for a step that applied CURE's RGP mask (Eq. 6), the percentage of the tensor's entries the
  mask let through (100 for tensors it does not cover, the classifier among them; Fig. 6b and 10). Weight
  decay and momentum still move masked entries; "updated" means "its gradient was not zeroed";
* ``would_pass_pct``: for a step without a mask (ST, AT, TRADES, CURE with ``cure.rgp: false``, CURE-Eff's
  natural warm-up), the percentage that CURE's mask would let through at ``cure.p``, on the tensors
  ``cure.masking`` selects (``rgp`` when it is ``none``). The score is that of Eq. 6 with both gradients equal to
  the one the method computed, ``alpha |g| + (1 - alpha) |g| = |g|``; the threshold and the strict ``<`` are
  the mask's own (:func:`..rgp.rgp_drop`).

Each record is ``{"global_step", "epoch", "kind": "updated" | "would_pass", "p", "tensors": {name: {...}}}``;
the epoch's records go into its ``metrics.jsonl`` line under ``grad_stats``. A record costs one host
synchronisation (two for ``would_pass``, whose percentiles are computed then); steps in between cost nothing.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .rgp import masked_parameter_names, rgp_drop


@torch.no_grad()
def gradient_statistics(
    model: nn.Module, mask: tuple[list[str], torch.Tensor] | None, *, masking: str, p: float
) -> dict[str, Any]:
    """One record (without its step and epoch) of the gradients now in ``model``'s ``.grad``.

    ``mask``: (names, entries zeroed per tensor) of the mask the step applied (``Method.mask_counts``), or None.
    ``masking``/``p``: the recipe's ``cure.masking`` and ``cure.p``, for the would-pass share."""
    named = [(n, w) for n, w in model.named_parameters() if w.requires_grad and w.grad is not None]
    means = torch.stack([w.grad.detach().float().abs().mean() for _, w in named]).tolist() if named else []
    passed: dict[str, float] = {}
    if mask is not None:
        kind = "updated"
        names, zeroed = mask
        numel = {n: w.numel() for n, w in named}
        for name, count in zip(names, zeroed.tolist(), strict=True):
            passed[name] = 100.0 * (1.0 - count / numel[name])
    else:
        kind = "would_pass"
        covered = set(masked_parameter_names(model, masking if masking != "none" else "rgp"))
        drops = [(n, rgp_drop(w.grad.detach().abs(), p).sum()) for n, w in named if n in covered]
        if drops:
            counts = torch.stack([c for _, c in drops]).tolist()
            numel = {n: w.numel() for n, w in named}
            passed = {n: 100.0 * (1.0 - c / numel[n]) for (n, _), c in zip(drops, counts, strict=True)}
    key = f"{kind}_pct"
    tensors = {n: {"grad_abs_mean": m, key: passed.get(n, 100.0)} for (n, _), m in zip(named, means, strict=True)}
    return {"kind": kind, "p": float(p), "tensors": tensors}
