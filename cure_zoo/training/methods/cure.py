"""CURE (Conserve-Update-Revise; Gowda et al., ICLR 2024) and CURE-Eff (its App. B variant).

One step (CURE paper, Sec. 4, Eqs. 4-8; App. A, Algorithm 1):

1. x_adv from the TRADES KL attack (eval-mode BatchNorm, start x + 0.001 N(0, I));
2. two separate train-mode forwards of f_theta (clean, then adversarial) and two no-grad train-mode forwards
   of the revision model f_rho;
3. L_adv = CE_nat + beta KL(p_nat || p_adv);  L_CR = KL(p_rho(x) || p(x)) + KL(p_rho(x_adv) || p(x_adv));
   L = L_adv + gamma L_CR;
4. three backward passes over the one graph: g_nat = dCE_nat, g_adv = dCE_adv (``rgp_soft``: dKL) for the
   masked tensors, and dL into ``.grad``;
5. per masked tensor, zero the entries of dL whose RGP score is below the p-th percentile (:mod:`..rgp`);
6. (trainer) SGD step; then the revision update (:mod:`..revision`).

The parts run under ``torch.profiler`` scopes (``attack``, ``cure.forward``, ``cure.revision_forward``,
``cure.score_gradients``, ``cure.backward``, ``cure.masks``, ``cure.revision_update``), which
``benchmarks/bench_training.py`` uses to show where a step's time goes.

CURE-Eff trains naturally for ``cure.natural_warmup_epochs`` epochs and then runs the CURE step with the
same optimizer and schedule; the revision model is created at the switch as a real copy of the weights.

The ablation switches of App. C.3 (Table 7): ``cure.rgp: false`` skips the two score gradients and the mask
(the update is the whole dL); ``cure.revise: false`` has no revision model at all, so no SMU and no L_CR
(L = L_adv; ``cure.gamma`` and the ``revision_*`` keys are then unused). Both off is TRADES with beta
``cure.beta`` and CURE's attack, from the same starting weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.profiler import record_function

from ...attacks.losses import ce_loss, kl_logits_loss
from ..data import derive_seed
from ..revision import RevisionModel
from ..rgp import apply_rgp_masks_, masked_parameter_names
from .base import Batch, Method, StepContext, trades_terms
from .st import NaturalTraining


class Cure(Method):
    name = "cure"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cfg = self.recipe.cure
        self.revision: RevisionModel | None = None
        self._masked: list[torch.nn.Parameter] = []
        self._masked_names: list[str] = []
        self._zeroed: torch.Tensor | None = None  # per masked tensor, the entries the last step's mask zeroed
        # the official rgp_soft scores signed gradients, its second one of the (unscaled) KL; rgp scores |dCE_adv|
        self._signed_scores = self.cfg.masking == "rgp_soft"

    def prepare(self) -> None:
        names = set(masked_parameter_names(self.model, self.cfg.masking if self.cfg.rgp else "none"))
        named = [(n, p) for n, p in self.model.named_parameters() if n in names]
        self._masked_names = [n for n, _ in named]
        self._masked = [p for _, p in named]

    def start_revision(self) -> None:
        self.revision = RevisionModel(self.model, self.cfg, seed=derive_seed(self.recipe.run.seed, "revision"))

    def on_epoch_start(self, epoch: int) -> None:
        if self.cfg.revise and self.revision is None:
            self.start_revision()

    def mask_counts(self) -> tuple[list[str], torch.Tensor] | None:
        return None if self._zeroed is None else (self._masked_names, self._zeroed)

    def step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        assert self.revision is not None or not self.cfg.revise, "on_epoch_start creates the revision model"
        cfg, x, y = self.cfg, batch.x, batch.y
        self._zeroed = None
        x_adv = self.adversarial(batch, ctx, self.recipe.attack, alpha=cfg.alpha)
        with ctx.autocast():
            with record_function("cure.forward"):
                z_nat = self.forward(x).float()
                z_adv = self.forward(x_adv).float()
            if self.revision is not None:
                with record_function("cure.revision_forward"):
                    r_nat = self.revision(x).float()
                    r_adv = self.revision(x_adv).float()
        ce_nat, kl = trades_terms(z_nat, z_adv, y)
        loss = l_adv = ce_nat + cfg.beta * kl
        ce_adv = ce_loss(z_adv, y).mean()
        stats = {"loss": loss.detach(), "ce_nat": ce_nat.detach(), "kl": kl.detach()}
        if self.revision is not None:
            l_cr = kl_logits_loss(z_nat, r_nat).mean() + kl_logits_loss(z_adv, r_adv).mean()
            loss = l_adv + cfg.gamma * l_cr
            stats.update(loss=loss.detach(), l_cr=l_cr.detach())
        stats.update(ce_adv=ce_adv.detach(), adv_acc=(z_adv.argmax(1) == y).float().mean())
        if not self._masked:
            with record_function("cure.backward"):
                self.backward_and_reduce(loss * batch.share, ctx)
            return stats
        other = kl if self._signed_scores else ce_adv
        s = batch.share
        with record_function("cure.score_gradients"):  # the two extra VJPs (one per branch)
            g_nat = torch.autograd.grad(ce_nat * s, self._masked, retain_graph=True, materialize_grads=True)
            g_other = torch.autograd.grad(other * s, self._masked, retain_graph=True, materialize_grads=True)
        with record_function("cure.backward"):
            (loss * s).backward()
            grads = [p.grad for p in self.trainable() if p.grad is not None]
            g_nat, g_other = list(g_nat), list(g_other)
            ctx.reduce_(grads + g_nat + g_other)
        with record_function("cure.masks"):
            zeroed = self.apply_masks(g_nat, g_other)
        self._zeroed = zeroed
        stats["masked_frac"] = zeroed.sum().float() / sum(p.numel() for p in self._masked)
        return stats

    def apply_masks(self, g_nat: list[torch.Tensor], g_other: list[torch.Tensor]) -> torch.Tensor:
        """Zero, in each masked tensor's ``.grad``, the entries whose RGP score is below the p-th percentile;
        returns how many entries each tensor had zeroed."""
        grads = [p.grad for p in self._masked]
        return apply_rgp_masks_(grads, g_nat, g_other, alpha=self.cfg.alpha, p=self.cfg.p, signed=self._signed_scores)

    def after_step(self, epoch: int) -> dict[str, float]:
        if self.revision is None:  # cure.revise: false
            return {}
        with record_function("cure.revision_update"):
            revised = self.revision.step(self.model, epoch)
        return {"revised": float(revised), "revision_rate": self.revision.rate}

    def state_dict(self) -> dict[str, Any]:
        return {"revision": None if self.revision is None else self.revision.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("revision") is not None:
            self.start_revision()
            self.revision.load_state_dict(state["revision"])


class CureEff(Cure):
    """Natural warm-up, then CURE, within one epoch budget (CURE paper, App. B)."""

    name = "cure_eff"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.natural = NaturalTraining(self.recipe, self.model, self.forward)

    def in_warmup(self, epoch: int) -> bool:
        return epoch <= self.cfg.natural_warmup_epochs

    def on_epoch_start(self, epoch: int) -> None:
        if not self.in_warmup(epoch) and self.cfg.revise and self.revision is None:
            self.start_revision()  # the switch: a real copy of theta, never shared storage

    def step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        if self.in_warmup(ctx.epoch):
            self._zeroed = None
            return self.natural.step(batch, ctx)
        return super().step(batch, ctx)

    def after_step(self, epoch: int) -> dict[str, float]:
        return {} if self.in_warmup(epoch) else super().after_step(epoch)
