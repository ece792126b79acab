"""Per-sample losses that PGD ascends. Each returns a vector of shape [B]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample."""
    return F.cross_entropy(logits, labels, reduction="none")


def cw_margin_loss(logits: torch.Tensor, labels: torch.Tensor, confidence: float = 50.0) -> torch.Tensor:
    """Carlini-Wagner margin as used by the CW-inf attack of TRADES/MART/CAT and the CURE code:
    ``-clamp(z_y - max_{k != y} z_k + confidence, min=0)``. Ascending it pushes the best wrong logit above
    the true one by up to ``confidence``."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return -(true - others.amax(1) + confidence).clamp(min=0)


def kl_loss(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """``KL(target || softmax(logits))`` per sample: the TRADES inner-maximisation objective."""
    return F.kl_div(F.log_softmax(logits, dim=1), target_probs, reduction="none").sum(1)


def kl_logits_loss(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(target_logits) || softmax(logits))`` per sample, computed from log-probabilities so that
    it stays finite (and differentiable in both arguments) when a probability underflows to 0. TRADES'
    regulariser and CURE's L_adv/L_CR terms; as a PGD objective it equals :func:`kl_loss` of the softmax."""
    return F.kl_div(
        F.log_softmax(logits, dim=1), F.log_softmax(target_logits, dim=1), reduction="none", log_target=True
    ).sum(1)
