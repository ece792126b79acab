"""Projected gradient descent (ascent) under an L-inf or an L2 budget, on images in [0, 1]."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn

from .counter_rng import counter_uniform

_L2_DIVISION_EPS = 1e-10  # a zero gradient takes no step (torchattacks' eps_for_division)


def uniform_start(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniform random start in the eps-ball (Madry et al.; the paper's PGD-20 evaluation)."""
    noise = torch.rand(x.shape, generator=generator, device=x.device if generator is None else generator.device)
    return (noise.to(x.device, x.dtype) * 2 - 1) * eps


def indexed_uniform_start(x: torch.Tensor, eps: float, seed: int, indices: torch.Tensor) -> torch.Tensor:
    """A uniform start in the eps-ball drawn per image from ``(seed, official image index)``: image ``i``
    gets the same start whatever batch or shard it is in (see :mod:`.counter_rng`)."""
    u = counter_uniform(seed, indices, tuple(x.shape[1:]), device=x.device)
    return (u.to(x.dtype) * 2 - 1) * eps


def indexed_l2_start(x: torch.Tensor, eps: float, seed: int, indices: torch.Tensor) -> torch.Tensor:
    """A uniform start in the L2 ball of radius ``eps``, drawn per image from ``(seed, official image index)``
    like :func:`indexed_uniform_start`: an isotropic direction (Box-Muller normals from the counter-based
    uniforms) at radius ``eps * u ** (1 / d)``, which makes the point uniform in the ball's volume."""
    shape = tuple(x.shape[1:])
    d = x[0].numel()
    u = counter_uniform(seed, indices, (2 * d + 1,), device=x.device).to(torch.float64)
    u1, u2, radius = u[:, :d], u[:, d : 2 * d], u[:, 2 * d :]
    normal = torch.sqrt(-2 * torch.log1p(-u1)) * torch.cos(2 * torch.pi * u2)  # log1p(-u): u may be 0, never 1
    direction = normal / normal.norm(dim=1, keepdim=True)
    return (direction * eps * radius ** (1 / d)).reshape(len(x), *shape).to(x.dtype)


def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """``delta`` scaled per image onto the L2 ball of radius ``eps`` where it lies outside."""
    norms = delta.flatten(1).norm(dim=1)
    factor = torch.clamp(eps / norms, max=1.0)  # norm 0 -> inf -> 1
    return delta * factor.view(-1, *([1] * (delta.ndim - 1)))


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
    norm: str = "Linf",
) -> torch.Tensor:
    """Maximise ``loss_fn(model(x_adv))`` (a per-sample vector) over ``||x_adv - x||_inf <= eps`` (``norm``
    ``"Linf"``) or ``||x_adv - x||_2 <= eps`` (``"L2"``).

    ``x_adv`` starts at ``x + delta`` (as given: the CURE/TRADES code does not clamp the start). L-inf: each
    step moves by ``step_size * sign(grad)``, projects onto the eps-ball around ``x`` and clamps to [0, 1].
    L2: each step moves by ``step_size * grad / ||grad||_2`` (per image), scales the perturbation back onto
    the L2 ball and clamps to [0, 1] (the order of torchattacks' PGDL2 and of Madry et al.'s code).
    The loss is summed over the batch, so each sample's step depends on its own loss only (model in eval
    mode). Only the input gradient is computed; parameter ``.grad`` is left untouched.
    """
    if norm not in ("Linf", "L2"):
        raise ValueError(f"pgd runs under the Linf or the L2 norm, not {norm!r}")
    x = x.detach()
    x_adv = x + delta.detach() if delta is not None else x.clone()
    lower, upper = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = loss_fn(model(x_adv)).sum()
        (grad,) = torch.autograd.grad(loss, x_adv)
        if norm == "Linf":
            x_adv = torch.max(torch.min(x_adv.detach() + step_size * grad.sign(), upper), lower)
        else:
            grad_norm = grad.flatten(1).norm(dim=1).add(_L2_DIVISION_EPS).view(-1, *([1] * (x.ndim - 1)))
            x_adv = (x + project_l2(x_adv.detach() + step_size * grad / grad_norm - x, eps)).clamp(0, 1)
    return x_adv.detach()
