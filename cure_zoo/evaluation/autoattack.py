"""AutoAttack (standard, L-inf or L2: APGD-CE, APGD-T, FAB-T, Square) through the ``pyautoattack`` package.

The attack itself is pyautoattack's, called as its README shows (``AutoAttack(model, norm='Linf', eps=...,
version='standard', seed=...)`` then ``run_standard_evaluation(x, y, batch_size=...)``), so the result is
exactly what calling pyautoattack directly gives. This wrapper adds what an instrument needs around it:

- pyautoattack's own checks (randomised or dynamic defence, probabilities instead of logits, too many target
  classes, Square beating the gradient attacks) are logged as warnings by the ``auto-attack`` logger; they
  are captured and returned as flags, not hidden;
- its progress messages drive a progress bar;
- the adversarial images are checked against the budget (L-inf <= eps, inside [0, 1]) and re-classified; a
  disagreement with AutoAttack's own bookkeeping is flagged;
- the global RNG, which pyautoattack reseeds, is restored afterwards.

AutoAttack draws its randomness per batch (it reseeds before each batch of each sub-attack), so its result
can depend on the batch size and on how images are sharded; README.md reports how much (measured).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..attacks import classify, nonfinite_flag

AA_LOGGER = "auto-attack"
STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
_BUDGET_TOL = 1e-5


@dataclass
class AutoAttackOutcome:
    robust: torch.Tensor  # bool [N], True = still correctly classified after all sub-attacks
    x_adv: torch.Tensor  # [N, C, H, W] on the CPU: the adversarial image where one was found, else the input
    accuracy_after: dict[str, float] = field(default_factory=dict)  # robust fraction after each sub-attack
    flags: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each sub-attack that ran

    def robust_after(self) -> dict[str, int]:
        """Images still robust after each sub-attack that ran, as counts. pyautoattack logs percentages with
        two decimals, which fix the count exactly for up to 10,000 images per call."""
        n = len(self.robust)
        return {stage: round(fraction * n) for stage, fraction in self.accuracy_after.items()}


class _Capture(logging.Handler):
    """Collects pyautoattack's warnings and reports progress from its debug messages."""

    _after = re.compile(r"robust accuracy after ([A-Z0-9-]+): ([0-9.]+)%(?: \(total time ([0-9.]+) s\))?")
    _batch = re.compile(r"^([a-z0-9-]+) - (\d+)/(\d+) - ")

    def __init__(self, on_progress: Callable[[str, int, int], None] | None):
        super().__init__(level=logging.DEBUG)
        self.warnings: list[str] = []
        self.accuracy_after: dict[str, float] = {}
        self.total_time: dict[str, float] = {}  # AutoAttack's running total after each sub-attack
        self.on_progress = on_progress

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            self.warnings.append(f"AutoAttack: {msg}")
        elif m := self._after.search(msg):
            self.accuracy_after[m.group(1).lower()] = float(m.group(2)) / 100
            if m.group(3) is not None:
                self.total_time[m.group(1).lower()] = float(m.group(3))
        elif (m := self._batch.search(msg)) and self.on_progress is not None:
            self.on_progress(m.group(1), int(m.group(2)), int(m.group(3)))


def run_autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    seed: int,
    batch_size: int,
    device: torch.device,
    on_progress: Callable[[str, int, int], None] | None = None,
    norm: str = "Linf",
) -> AutoAttackOutcome:
    """Standard AutoAttack (``norm`` ``"Linf"`` or ``"L2"``) of ``model`` (eval mode, logits, [0, 1] inputs)
    on ``x``, ``y`` (any device).

    ``on_progress(sub_attack, batch, n_batches)`` is called after each batch of each sub-attack."""
    from pyautoattack import AutoAttack

    logger = logging.getLogger(AA_LOGGER)
    capture = _Capture(on_progress)
    saved = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)  # its progress lines are DEBUG
    logger.propagate = False  # ...which must not reach the user's root handlers
    logger.addHandler(capture)
    fork_devices = [device] if device.type == "cuda" else []
    watched = _NonFiniteWatch(model)
    try:
        with torch.random.fork_rng(devices=fork_devices):
            adversary = AutoAttack(watched, norm=norm, eps=eps, version="standard", seed=seed, device=device)
            x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    finally:
        logger.removeHandler(capture)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    robust = (y_adv.cpu() == y.cpu()).to(torch.bool)
    flags = list(dict.fromkeys(capture.warnings))  # pyautoattack checks once per call; keep order, no repeats
    if watched.nonfinite_rows:
        flags.append(
            f"AutoAttack: the model returned NaN or infinite logits on {watched.nonfinite_rows} inputs during the "
            f"attack; pyautoattack reads such a row as a class, so its robust accuracy is an upper bound, not a "
            f"measurement (gradient masking)"
        )
    robust, recheck = _check_adversarial(
        model, x, x_adv, y, robust, eps=eps, norm=norm, batch_size=batch_size, device=device
    )
    flags += recheck
    totals = list(capture.total_time.items())
    seconds = {stage: round(t - (totals[i - 1][1] if i else 0.0), 1) for i, (stage, t) in enumerate(totals)}
    return AutoAttackOutcome(robust, x_adv.cpu(), capture.accuracy_after, flags, seconds)


class _NonFiniteWatch(nn.Module):
    """The model as pyautoattack sees it, counting the output rows that hold a NaN or an infinity."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.nonfinite_rows = 0
        self.training = model.training  # pyautoattack's checks see the model's own mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.nonfinite_rows += int((~torch.isfinite(out.detach()).all(dim=1)).sum())
        return out


@torch.no_grad()
def _check_adversarial(model, x, x_adv, y, robust, *, eps, norm, batch_size, device) -> tuple[torch.Tensor, list[str]]:
    """Independent checks of AutoAttack's output: inside the budget, and re-classified as it says. Returns
    the robust flags with the zoo's logit rule applied (non-finite logits on an image: not robust)."""
    flags = []
    diff = (x_adv.cpu() - x.cpu()).flatten(1)
    dist = diff.abs().amax(1) if norm == "Linf" else diff.norm(dim=1)
    if (dist > eps + _BUDGET_TOL).any() or x_adv.min() < 0 or x_adv.max() > 1 or not torch.isfinite(x_adv).all():
        flags.append(
            f"AutoAttack returned images outside the budget (max {norm} {dist.max().item():.6f} > eps {eps:.6f}, "
            f"or outside [0, 1])"
        )
    parts = [
        classify(model(x_adv[i : i + batch_size].to(device)), y[i : i + batch_size].to(device))
        for i in range(0, len(y), batch_size)
    ]
    correct = torch.cat([p.correct.cpu() for p in parts]) if parts else torch.zeros(0, dtype=torch.bool)
    nonfinite = torch.cat([p.nonfinite.cpu() for p in parts]) if parts else torch.zeros(0, dtype=torch.bool)
    if nonfinite.any():
        flags.append(nonfinite_flag("AutoAttack's adversarial images", int(nonfinite.sum()), len(y)))
    disagree = int((correct != robust)[~nonfinite].sum())
    if disagree:
        flags.append(
            f"re-classifying AutoAttack's adversarial images disagrees with its robust flags on {disagree} of "
            f"{len(y)} images (numerical non-determinism of the model?); its own flags are reported"
        )
    return robust & ~nonfinite, flags
