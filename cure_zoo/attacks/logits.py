"""The zoo's one rule for classifying from logits, used by every accuracy it reports (clean, PGD, CW-inf, the
re-check of AutoAttack's images, the training's per-epoch check).

An image whose logits hold a NaN or an infinity is counted as misclassified: not robust under an attack, not
correct on clean images. ``argmax`` would otherwise pick a class for it (a row of NaNs gives class 0), so a
model that breaks down under perturbation scored as robust on exactly its class-0 images. Outputs that stop
being numbers under perturbation are a defence symptom (they also hide the gradient the attack needs), so the
measurement goes on, counts them, and the result carries a flag saying how many there were; it never
silently turns them into a prediction.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Classified(NamedTuple):
    correct: torch.Tensor  # bool [B]: finite logits whose argmax is the label
    nonfinite: torch.Tensor  # bool [B]: logits with a NaN or an infinity (counted as not correct)


def classify(logits: torch.Tensor, labels: torch.Tensor) -> Classified:
    """Per-image correctness of ``logits`` [B, K] against ``labels`` [B] under the rule above."""
    nonfinite = ~torch.isfinite(logits).all(dim=1)
    correct = (logits.argmax(dim=1) == labels) & ~nonfinite
    return Classified(correct, nonfinite)


def nonfinite_flag(where: str, count: int, total: int) -> str:
    """The result's flag for ``count`` of ``total`` images with non-finite logits under ``where``."""
    return (
        f"{where}: the model returned NaN or infinite logits for {count} of {total} images; they are counted as "
        f"not robust (outputs that break down under perturbation are gradient masking, not robustness)"
    )
