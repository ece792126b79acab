"""The smallest L-inf perturbation that flips each image (the paper's App. D.1, Fig. 8).

Two methods, both giving per image an upper bound on the true minimum (no attack proves a lower bound):

- ``bisect`` (default): bisection over the budget of the evaluator's own PGD (cross-entropy, the
  per-image uniform start of :mod:`cure_zoo.evaluation.protocol`, ``steps`` sign steps of ``2.5 * eps /
  steps``, Madry et al.'s rule, so the step grows with the budget being tested). Each image keeps the
  smallest budget at which PGD flipped it (``min_eps``) and the largest at which it did not (``lower``), so
  the precision is known (``eps_max / 2**iterations``). Chosen as the default because it is the same attack
  as the PGD columns (checked against torchattacks), so ``min_eps > e`` reads as "survives PGD at e"; and it
  needs one gradient per step where FAB needs the Jacobian of every logit.
- ``fab``: pyautoattack's FAB (Croce & Hein 2020), a minimum-norm attack, untargeted, one restart; its
  adversarial image's L-inf distance is the estimate. A second, independent opinion.

The paper used foolbox; neither method here is foolbox's, so values are comparable across zoo models, not
to the paper's Fig. 8 numbers. Images the model already gets wrong have ``min_eps = 0``; images no
perturbation up to ``eps_max`` flips are reported as ``null`` (censored) and counted separately.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..attacks import ce_loss, classify, indexed_uniform_start, pgd
from ..errors import CureZooError
from ..io import write_json_atomic

SCHEMA = "cure_zoo.minpert/1"
METHODS = ("bisect", "fab")
STEP_FACTOR = 2.5  # PGD step = 2.5 * eps / steps


@dataclass
class MinPertResult:
    """Per image: ``min_eps`` (0 for misclassified, ``inf`` for not flipped up to ``eps_max``), the
    perturbation that flips it (``delta``, zero where none) and the class it is flipped to."""

    min_eps: torch.Tensor  # float64 [N]
    lower: torch.Tensor  # float64 [N]: largest budget known not to flip (bisect), else 0
    delta: torch.Tensor  # float32 [N, C, H, W]
    adv_label: torch.Tensor  # long [N], -1 where not flipped
    images: Any  # the ImageSet
    model: dict[str, Any]
    method: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """The distribution over the images the model classifies correctly (min_eps > 0)."""
        correct = self.min_eps > 0
        flipped = self.min_eps[correct & torch.isfinite(self.min_eps)]
        n_censored = int((correct & ~torch.isfinite(self.min_eps)).sum())
        out: dict[str, Any] = {
            "n": len(self.min_eps),
            "n_correct": int(correct.sum()),
            "n_flipped": len(flipped),
            "n_not_flipped": n_censored,
        }
        if out["n_correct"]:
            # quantiles over the correctly classified images, censored ones counted as +inf (so a median above
            # eps_max is reported as null rather than hidden)
            censored = torch.full((n_censored,), math.inf, dtype=torch.float64)
            values = torch.cat([flipped.to(torch.float64), censored]).sort().values
            for q in (0.1, 0.25, 0.5, 0.75, 0.9):
                v = float(values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))])
                out[f"q{int(q * 100)}"] = v if math.isfinite(v) else None
        if len(flipped):
            out["mean_flipped"] = float(flipped.mean())
        return out

    def to_json(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return round(float(v), 8) if math.isfinite(v) else None

        return {
            "schema": SCHEMA,
            "model": self.model,
            "dataset": {
                "name": self.images.dataset,
                "split": self.images.split,
                "source": self.images.source,
                "n_examples": len(self.images),
            },
            "method": self.method,
            "summary": self.summary(),
            "per_image": [
                {
                    "index": int(i),
                    "label": int(y),
                    "min_eps": num(e),
                    "min_eps_255": num(e * 255),
                    "lower": num(lo),
                    "adv_label": int(a),
                }
                for i, y, e, lo, a in zip(
                    self.images.indices,
                    self.images.labels,
                    self.min_eps.tolist(),
                    self.lower.tolist(),
                    self.adv_label,
                    strict=True,
                )
            ],
        }

    def save(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_json())


def _bisect(net, x, y, indices, *, eps_max, iterations, steps, seed):
    """Per-image bisection over PGD's budget on one batch; returns (min_eps, lower, delta, adv_label)."""
    n = len(x)
    shape = (n,) + (1,) * (x.ndim - 1)

    def attack(eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = eps.to(x.dtype).view(shape)
        delta = indexed_uniform_start(x, 1.0, seed, indices) * e  # the same direction at every budget
        adv = pgd(net, x, lambda z: ce_loss(z, y), eps=e, step_size=STEP_FACTOR * e / steps, steps=steps, delta=delta)
        with torch.no_grad():
            logits = net(adv)
        return ~classify(logits, y).correct, adv, logits.argmax(1)

    with torch.no_grad():
        clean_correct = classify(net(x), y).correct
    lo = torch.zeros(n, dtype=torch.float64, device=x.device)
    hi = torch.full((n,), float(eps_max), dtype=torch.float64, device=x.device)
    best_delta = torch.zeros_like(x)
    adv_label = torch.full((n,), -1, dtype=torch.long, device=x.device)
    flipped, adv, pred = attack(hi)
    found = flipped & clean_correct
    best_delta[found] = (adv - x)[found]
    adv_label[found] = pred[found]
    for _ in range(iterations):
        mid = (lo + hi) / 2
        flipped, adv, pred = attack(mid)
        win = flipped & found
        hi = torch.where(win, mid, hi)
        lo = torch.where(found & ~win, mid, lo)
        best_delta[win] = (adv - x)[win]
        adv_label[win] = pred[win]
    min_eps = torch.where(found, hi, torch.full_like(hi, math.inf))
    min_eps = torch.where(clean_correct, min_eps, torch.zeros_like(hi))
    lower = torch.where(found, lo, torch.zeros_like(lo))
    with torch.no_grad():
        adv_label = torch.where(clean_correct, adv_label, net(x).argmax(1))
    return min_eps, lower, best_delta, adv_label


def _fab(net, x, y, *, eps_max, iterations, seed, device):
    from pyautoattack.fab_pt import FABAttack_PT

    fork = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        attack = FABAttack_PT(net, norm="Linf", n_restarts=1, n_iter=iterations, eps=eps_max, seed=seed, device=device)
        adv = attack.perturb(x, y)
    with torch.no_grad():
        clean_correct = classify(net(x), y).correct
        logits = net(adv)
    flipped = ~classify(logits, y).correct & clean_correct
    dist = (adv - x).flatten(1).abs().amax(1).to(torch.float64)
    min_eps = torch.where(flipped, dist, torch.full_like(dist, math.inf))
    min_eps = torch.where(clean_correct, min_eps, torch.zeros_like(dist))
    delta = torch.where(flipped.view(-1, 1, 1, 1), adv - x, torch.zeros_like(x))
    adv_label = torch.where(flipped, logits.argmax(1), torch.full_like(y, -1))
    with torch.no_grad():
        adv_label = torch.where(clean_correct, adv_label, net(x).argmax(1))
    return min_eps, torch.zeros_like(min_eps), delta, adv_label


def minimum_perturbation(
    model: Any,
    images: Any,
    *,
    method: str = "bisect",
    eps_max: float | str = 32 / 255,
    iterations: int | None = None,
    steps: int = 20,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> MinPertResult:
    """The smallest L-inf perturbation (up to ``eps_max``) that flips each image of ``images`` (an
    ``ImageSet``) for ``model`` (an ``nn.Module``, ``LoadedModel`` or model spec), by ``method`` (see the
    module docstring). ``iterations``: bisection steps (default 10: precision ``eps_max / 1024``) or FAB's
    iterations (default 100); ``steps``: PGD steps per bisection probe."""
    from ..distributed import resolve_device
    from ..evaluation.engine import _describe_model, attack_mode
    from ..evaluation.protocol import eps_label, parse_eps

    if method not in METHODS:
        raise CureZooError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    eps_max = parse_eps(eps_max)
    iterations = (10 if method == "bisect" else 100) if iterations is None else iterations
    if iterations <= 0 or steps <= 0 or batch_size <= 0:
        raise CureZooError("iterations, steps and batch size must be positive")
    net, info = _describe_model(model)
    dev = resolve_device(device)
    net.to(dev)
    parts = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(attack_mode(net))
        for start in range(0, len(images), batch_size):
            sl = slice(start, start + batch_size)
            x, y = images.images[sl].to(dev), images.labels[sl].to(dev)
            if method == "bisect":
                part = _bisect(
                    net, x, y, images.indices[sl], eps_max=eps_max, iterations=iterations, steps=steps, seed=seed
                )
            else:
                part = _fab(net, x, y, eps_max=eps_max, iterations=iterations, seed=seed, device=dev)
            parts.append([t.cpu() for t in part])
    min_eps, lower, delta, adv_label = (torch.cat(ts) for ts in zip(*parts, strict=True))
    described: dict[str, Any] = {
        "kind": method,
        "norm": "Linf",
        "eps_max": eps_max,
        "eps_max_label": eps_label(eps_max),
    }
    if method == "bisect":
        described |= {
            "attack": f"PGD-{steps} on the cross-entropy, step 2.5 * eps / {steps}, uniform start per (seed, index)",
            "iterations": iterations,
            "precision": eps_max / 2**iterations,
            "seed": seed,
        }
    else:
        described |= {
            "attack": "pyautoattack FABAttack_PT, untargeted, 1 restart",
            "iterations": iterations,
            "seed": seed,
        }
    return MinPertResult(min_eps, lower, delta, adv_label, images, info, described)


def plot_examples(results: list[MinPertResult], path: str | os.PathLike, n: int = 8, names: list[str] | None = None):
    """The paper's Fig. 8: the first row shows the images, each further row one model's minimal perturbation
    (amplified to the colour range, mid-grey = 0), with its L-inf size x255 below. The first ``n`` images
    every model classifies correctly."""
    from .figures import pyplot, save_png

    plt = pyplot()
    images = results[0].images
    usable = torch.ones(len(images), dtype=torch.bool)
    for r in results:
        usable &= r.min_eps > 0
    pick = torch.nonzero(usable).flatten()[:n].tolist()
    if not pick:
        raise CureZooError("no image is classified correctly by every model; nothing to show")
    names = names or [r.model["name"] for r in results]
    rows = 1 + len(results)
    fig, axes = plt.subplots(rows, len(pick), figsize=(1.2 * len(pick), 1.5 * rows), squeeze=False)
    for j, i in enumerate(pick):
        axes[0][j].imshow(images.images[i].permute(1, 2, 0).numpy())
        for k, r in enumerate(results):
            d = r.delta[i]
            scale = float(d.abs().max()) or 1.0
            axes[k + 1][j].imshow((d / (2 * scale) + 0.5).clamp(0, 1).permute(1, 2, 0).numpy())
            e = float(r.min_eps[i])
            axes[k + 1][j].set_xlabel(f"{e * 255:.2f}/255" if math.isfinite(e) else "not flipped", fontsize=6)
    for row in axes:
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    # each row's caption above its first panel, left-aligned: zoo names are longer than a panel is tall
    axes[0][0].set_title("image", loc="left", fontsize=7)
    for k, name in enumerate(names):
        axes[k + 1][0].set_title(name, loc="left", fontsize=7)
    fig.suptitle(f"minimum L-inf perturbation ({results[0].method['kind']}); below: its size", fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def plot_distribution(results: list[MinPertResult], path: str | os.PathLike, names: list[str] | None = None):
    """Per model, the share of correctly classified images that survive budget eps (1 - CDF of min_eps)."""
    from .figures import pyplot, save_png

    plt = pyplot()
    names = names or [r.model["name"] for r in results]
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for r, name in zip(results, names, strict=True):
        values = r.min_eps[r.min_eps > 0]
        if not len(values):
            continue
        eps_max = r.method["eps_max"]
        grid = torch.linspace(0, eps_max, 200, dtype=torch.float64)
        survive = [(values > g).double().mean().item() * 100 for g in grid]
        ax.plot((grid * 255).tolist(), survive, label=f"{name} (n={len(values)})")
    ax.set_xlabel("L-inf budget (x/255)")
    ax.set_ylabel("correct images not yet flipped (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"minimum perturbation, {results[0].method['kind']}", fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)
