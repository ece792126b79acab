"""What every training method shares: the batch it is given, the step context, and the method interface.

A method's ``step`` runs the forward passes, writes the gradient of its objective (averaged over all
processes) into ``.grad`` and returns its losses; the trainer then checks them, steps the optimizer and calls
``after_step``. Losses are per-process means; gradients are taken of ``loss * batch.share`` (the process's
share of the global batch) and summed over processes, so they equal the gradient of the global-batch mean
however the batch is split.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.profiler import record_function

from ...attacks.losses import ce_loss, kl_logits_loss
from ...attacks.pgd import frozen_parameters, pgd
from ..recipe import AttackConfig, Recipe


@dataclass
class Batch:
    x: torch.Tensor  # this process's images in [0, 1]
    y: torch.Tensor
    share: float  # len(x) / global batch size
    # noise(kind) -> a tensor shaped like x: 'normal' N(0, I) or 'uniform' U[0, 1), drawn for the global batch
    # from the step's generator and sliced to this process (so any split sees the same numbers)
    noise: Callable[[str], torch.Tensor]


@dataclass
class StepContext:
    epoch: int  # 1-based
    autocast: Callable[[], AbstractContextManager]
    reduce_: Callable[[list[torch.Tensor]], None]  # in-place sum over processes


class Method:
    """Base class: natural training hooks that do nothing; subclasses implement ``step``."""

    name = "base"

    def __init__(
        self, recipe: Recipe, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        self.recipe = recipe
        self.model = model  # the nn.Module whose parameters are trained and saved
        self.forward = forward if forward is not None else model  # possibly torch.compile'd (compile_model)

    def prepare(self) -> None:
        """Change the model before the optimizer is built (layer freezing, re-initialisation)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before the first step of each (1-based) epoch, also after a resume."""

    def step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self, epoch: int) -> dict[str, float]:
        """Called after each optimizer step; returns values to log."""
        return {}

    def mask_counts(self) -> tuple[list[str], torch.Tensor] | None:
        """(parameter names, entries zeroed in each) of the gradient mask the last ``step`` applied (a device
        tensor, read only when gradient statistics are due); None when that step applied no mask."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # -- helpers shared by the methods --------------------------------------------------------------------

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def backward_and_reduce(self, loss: torch.Tensor, ctx: StepContext) -> None:
        """``.grad`` = gradient of the global-batch objective (the loss is already scaled by the share)."""
        loss.backward()
        ctx.reduce_([p.grad for p in self.trainable() if p.grad is not None])

    def adversarial(self, batch: Batch, ctx: StepContext, cfg: AttackConfig, alpha: float = 0.0) -> torch.Tensor:
        """The inner maximisation, with the model in eval mode (BatchNorm on running statistics) and
        its parameters frozen (only input gradients are needed).

        ``ce``: maximise CE(f(x'), y). ``kl``: maximise KL(p(x) || p(x')) with p(x) from one no-grad
        eval-mode forward. ``ce_kl``: CE + alpha KL (Algorithm 1 line 7). The start is
        ``x + start_std * N(0, I)`` (gaussian, not clamped) or uniform in the eps-ball.
        """
        model = self.forward
        was_training = self.model.training
        self.model.eval()
        x, y = batch.x, batch.y
        if cfg.start == "gaussian":
            delta = batch.noise("normal") * cfg.start_std
        else:
            delta = (batch.noise("uniform") * 2 - 1) * cfg.eps
        with ctx.autocast(), frozen_parameters(self.model), record_function("attack"):
            if cfg.objective == "ce":

                def objective(z: torch.Tensor) -> torch.Tensor:
                    return ce_loss(z.float(), y)
            else:
                with torch.no_grad():
                    clean = model(x).float()
                ce_weight = 1.0 if cfg.objective == "ce_kl" else 0.0
                kl_weight = alpha if cfg.objective == "ce_kl" else 1.0

                def objective(z: torch.Tensor) -> torch.Tensor:
                    z = z.float()
                    out = kl_weight * kl_logits_loss(z, clean)
                    return out + ce_weight * ce_loss(z, y) if ce_weight else out

            x_adv = pgd(model, x, objective, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.steps, delta=delta)
        self.model.train(was_training)
        return x_adv


def trades_terms(z_nat: torch.Tensor, z_adv: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE on clean logits, KL(p_nat || p_adv)), both batch means; the KL's gradient flows into both logits
    (the TRADES convention; CURE paper, Eq. 5)."""
    return ce_loss(z_nat, y).mean(), kl_logits_loss(z_adv, z_nat).mean()
