"""Projected gradient descent (ascent) under an L-inf budget, on images in [0, 1]."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn

from .counter_rng import counter_uniform


def uniform_start(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniform random start in the eps-ball (Madry et al.; the paper's PGD-20 evaluation)."""
    noise = torch.rand(x.shape, generator=generator, device=x.device if generator is None else generator.device)
    return (noise.to(x.device, x.dtype) * 2 - 1) * eps


def indexed_uniform_start(x: torch.Tensor, eps: float, seed: int, indices: torch.Tensor) -> torch.Tensor:
    """A uniform start in the eps-ball drawn per image from ``(seed, official image index)``: image ``i``
    gets the same start whatever batch or shard it is in (see :mod:`.counter_rng`)."""
    u = counter_uniform(seed, indices, tuple(x.shape[1:]), device=x.device)
    return (u.to(x.dtype) * 2 - 1) * eps


def gaussian_start(x: torch.Tensor, std: float = 0.001) -> torch.Tensor:
    """The TRADES/CURE training start: ``0.001 * N(0, I)``."""
    return torch.randn_like(x) * std


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """``requires_grad=False`` on every parameter for the duration; each parameter's own flag is restored after.
    Attacks need input gradients only; with the parameters frozen autograd records less in the forward pass."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    eps: float,
    step_size: float,
    steps: int,
    delta: torch.Tensor | None = None,
) -> torch.Tensor:
    """Maximise ``loss_fn(model(x_adv))`` (a per-sample vector) over ``||x_adv - x||_inf <= eps``.

    ``x_adv`` starts at ``x + delta`` (as given: the CURE/TRADES code does not clamp the start), then each
    step moves by ``step_size * sign(grad)``, projects onto the eps-ball around ``x`` and clamps to [0, 1].
    The loss is summed over the batch, so each sample's step depends on its own loss only (model in eval
    mode). Only the input gradient is computed; parameter ``.grad`` is left untouched.
    """
    x = x.detach()
    x_adv = x + delta.detach() if delta is not None else x.clone()
    lower, upper = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = loss_fn(model(x_adv)).sum()
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.max(torch.min(x_adv.detach() + step_size * grad.sign(), upper), lower)
    return x_adv.detach()
