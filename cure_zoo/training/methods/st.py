"""Natural (standard) training: cross-entropy on the augmented clean images. CURE's starting point."""

from __future__ import annotations

import torch

from ...attacks.losses import ce_loss
from .base import Batch, Method, StepContext


class NaturalTraining(Method):
    name = "st"

    def step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        with ctx.autocast():
            logits = self.forward(batch.x)
        loss = ce_loss(logits.float(), batch.y).mean()
        self.backward_and_reduce(loss * batch.share, ctx)
        return {"loss": loss.detach(), "acc": (logits.argmax(1) == batch.y).float().mean()}
