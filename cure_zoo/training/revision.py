"""CURE's revision model f_rho: a stochastic momentum update (SMU) of the training model (paper Eq. 7).

After every optimizer step (CURE paper, Eq. 7 and App. A, Algorithm 1 lines 13-15; the decaying revision
rate of App. F.1)::

    t = t + 1
    if rate decay is on and epoch > rate_decay_after:  r = r / 2   ('code': every step; 'per_epoch': once per epoch)
    if U(0, 1) < r:
        d_t = min(1 - 1 / (t + 1), d)          # warm-up of the decay (off: d_t = d)
        rho = d_t * rho + (1 - d_t) * theta     # parameters only

The revision model starts as a real deep copy of the training model (parameters and BatchNorm buffers,
never shared storage: the CURE-Eff aliasing bug of the official code). Its buffers evolve through its own
train-mode forwards, which run under ``no_grad`` and give the consistency-loss targets. The uniform draws come
from its own generator, seeded the same on every process, so all processes revise together.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn

from .recipe import CureConfig


class RevisionModel:
    def __init__(self, model: nn.Module, cfg: CureConfig, seed: int) -> None:
        self.module = copy.deepcopy(model).train()
        self.module.requires_grad_(False)
        self.rate = cfg.revision_rate
        self.decay = cfg.revision_decay
        self.decay_warmup = cfg.decay_warmup
        self.rate_decay = cfg.rate_decay
        self.rate_decay_after = cfg.rate_decay_after
        self.steps = 0  # t: steps since the revision model was created
        self.updates = 0
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self._decayed_epochs: set[int] = set()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Targets for the consistency loss: a train-mode forward without an autograd graph."""
        return self.module(x)

    def decay_at(self, t: int) -> float:
        return min(1.0 - 1.0 / (t + 1), self.decay) if self.decay_warmup else self.decay

    @torch.no_grad()
    def step(self, model: nn.Module, epoch: int) -> bool:
        """One SMU after an optimizer step in (1-based) ``epoch``; returns whether rho was revised."""
        self.steps += 1
        if epoch > self.rate_decay_after:
            if self.rate_decay == "code":
                self.rate /= 2
            elif self.rate_decay == "per_epoch" and epoch not in self._decayed_epochs:
                self._decayed_epochs.add(epoch)
                self.rate /= 2
        u = torch.rand((), generator=self.generator).item()
        if u >= self.rate:
            return False
        d = self.decay_at(self.steps)
        rho = [p for p in self.module.parameters()]
        theta = [p.detach() for p in model.parameters()]
        torch._foreach_mul_(rho, d)
        torch._foreach_add_(rho, theta, alpha=1.0 - d)
        self.updates += 1
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "module": self.module.state_dict(),
            "rate": self.rate,
            "steps": self.steps,
            "updates": self.updates,
            "generator": self.generator.get_state(),
            "decayed_epochs": sorted(self._decayed_epochs),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.rate = state["rate"]
        self.steps = state["steps"]
        self.updates = state["updates"]
        self.generator.set_state(state["generator"])
        self._decayed_epochs = set(state["decayed_epochs"])
