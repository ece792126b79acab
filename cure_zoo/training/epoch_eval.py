"""The per-epoch check: natural and PGD-20 accuracy of the training model on a fixed held-out set.

PGD-20 follows the paper's evaluation (CURE paper, Sec. 5 and App. F.1): CE objective, eps 8/255, step
0.003, uniform random start, model in eval mode, the final iterate classified (clean mistakes count as robust
mistakes; non-finite logits count as mistakes, and their number is recorded as ``nonfinite_logits``). The random starts
come from a generator seeded with ``eval.seed`` each time, so epochs are compared on the same starts. This is
a training monitor; the published numbers come from ``cure_zoo.evaluation``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import torch.nn as nn

from ..attacks import ce_loss, classify, pgd, uniform_start
from .recipe import EvalConfig


def evaluate_epoch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: EvalConfig,
    autocast: Callable[[], AbstractContextManager],
    forward: nn.Module | None = None,
) -> dict[str, float]:
    """Percent natural and PGD-20 accuracy of ``model`` on ``images`` (already on the model's device)."""
    forward = forward if forward is not None else model
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(cfg.seed)
    nat = rob = nonfinite = 0
    for start in range(0, len(labels), cfg.batch_size):
        x, y = images[start : start + cfg.batch_size], labels[start : start + cfg.batch_size]
        with torch.no_grad(), autocast():
            clean = classify(forward(x), y)
        nat += clean.correct.sum().item()
        nonfinite += clean.nonfinite.sum().item()
        if cfg.pgd_steps > 0:
            delta = uniform_start(x, cfg.pgd_eps, g)
            with autocast():
                x_adv = pgd(
                    forward,
                    x,
                    lambda z, y=y: ce_loss(z.float(), y),
                    eps=cfg.pgd_eps,
                    step_size=cfg.pgd_step_size,
                    steps=cfg.pgd_steps,
                    delta=delta,
                )
            with torch.no_grad(), autocast():
                adv = classify(forward(x_adv), y)
            rob += adv.correct.sum().item()
            nonfinite += adv.nonfinite.sum().item()
    model.train(was_training)
    n = len(labels)
    out = {"nat_acc": 100.0 * nat / n, "n": n}
    if cfg.pgd_steps > 0:
        out[f"pgd{cfg.pgd_steps}_acc"] = 100.0 * rob / n
    if nonfinite:  # counted as wrong (cure_zoo.attacks.logits); recorded so the metrics show it
        out["nonfinite_logits"] = nonfinite
    return out
