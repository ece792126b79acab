"""TRADES (Zhang et al., 2019): CE on clean images + beta * KL(p(x) || p(x_adv)), x_adv from the KL attack."""

from __future__ import annotations

import torch

from .base import Batch, Method, StepContext, trades_terms


class Trades(Method):
    name = "trades"

    def step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        x_adv = self.adversarial(batch, ctx, self.recipe.attack)
        with ctx.autocast():
            z_nat = self.forward(batch.x).float()
            z_adv = self.forward(x_adv).float()
        ce_nat, kl = trades_terms(z_nat, z_adv, batch.y)
        loss = ce_nat + self.recipe.trades.beta * kl
        self.backward_and_reduce(loss * batch.share, ctx)
        return {
            "loss": loss.detach(),
            "ce_nat": ce_nat.detach(),
            "kl": kl.detach(),
            "adv_acc": (z_adv.argmax(1) == batch.y).float().mean(),
        }
