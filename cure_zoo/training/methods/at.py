"""PGD adversarial training (Madry et al., 2018): minimise CE on PGD-10 examples (CE objective, uniform
start, eps 8/255, step 2/255), optionally in the paper's layer-wise setting (``layerwise.update``)."""

from __future__ import annotations

import torch

from ...attacks.losses import ce_loss
from ..data import derive_seed
from ..layerwise import apply_layerwise
from ..modeling import build_model
from .base import Batch, Method, StepContext


class AdversarialTraining(Method):
    name = "at"

    def prepare(self) -> None:
        cfg = self.recipe.layerwise
        if cfg.update is not None:
            fresh = build_model(self.recipe, seed=derive_seed(self.recipe.run.seed, "reinit")) if cfg.reinit else None
            apply_layerwise(self.model, cfg, fresh)

    def step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        x_adv = self.adversarial(batch, ctx, self.recipe.attack)
        with ctx.autocast():
            logits = self.forward(x_adv)
        loss = ce_loss(logits.float(), batch.y).mean()
        self.backward_and_reduce(loss * batch.share, ctx)
        return {"loss": loss.detach(), "adv_acc": (logits.argmax(1) == batch.y).float().mean()}
