"""The evaluation protocol: which attacks exist, their settings, and parsing of what users type.

All attacks run on images in [0, 1] with the model in eval mode (the paper's evaluation), under the L-inf
norm (the paper's, default eps 8/255) or the L2 norm (``norm="L2"``, default eps 0.5, RobustBench's):

- ``nat``: clean accuracy.
- ``pgd20`` / ``pgd100``: PGD on the cross-entropy, a uniform random start in the eps-ball (drawn per image
  from ``(seed, official index)``, NOT clamped to [0, 1] before the first forward pass, as in the authors'
  code), K sign steps of 0.003, each projected to the eps-ball and to [0, 1]; the final iterate is classified.
- ``cw20``: the same PGD on the CW margin loss with confidence 50 (the "CW-inf" of TRADES/MART/CAT; the
  paper's C&W column).
- ``aa``: AutoAttack, standard version (APGD-CE, APGD-T, FAB-T, Square), through ``pyautoattack``.
- ``sweep``: PGD-20 at 0.25, 0.5, 1, 2, 4 and 8 /255 (the paper's Fig. 5b states the range 0.25/255 to
  8/255, not the points; the step size stays 0.003 as in the paper's PGD-20).

Any attack can be run at another epsilon with ``NAME@EPS``, e.g. ``pgd20@4/255``.

Under L2 the same names mean: PGD and CW-inf's margin PGD on the L2 ball (a uniform random start in the ball,
per image as above; normalised-gradient steps of ``2.5 * eps / K``, Madry et al.'s rule, since the paper's
0.003 is an L-inf step), AutoAttack with ``norm='L2'`` (standard: APGD-CE, APGD-T, FAB-T, Square), and
``sweep`` = PGD-20 at L2 eps 0.125, 0.25, 0.5 and 1. The norm is recorded in the protocol and per attack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from ..errors import CureZooError
from ..parsing import parse_number
from .autoattack import STANDARD_ATTACKS

DEFAULT_EPS = 8 / 255
PGD_STEP_SIZE = 0.003  # the paper's (TRADES') evaluation step
CW_CONFIDENCE = 50.0
SWEEP_EPS_255 = (0.25, 0.5, 1, 2, 4, 8)
DEFAULT_EPS_BY_NORM = {"Linf": DEFAULT_EPS, "L2": 0.5}  # L2: RobustBench's CIFAR budget
L2_STEP_FACTOR = 2.5  # L2 PGD step = 2.5 * eps / steps (Madry et al. 2018)
SWEEP_EPS_L2 = (0.125, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the protocol. ``eps`` is None for ``nat``."""

    name: str  # the key in results and masks, e.g. "pgd20" or "pgd20@2/255"
    kind: str  # "nat" | "pgd" | "autoattack"
    eps: float | None = None
    loss: str | None = None  # "ce" | "cw" (PGD only)
    steps: int = 0
    step_size: float = 0.0
    confidence: float | None = None
    norm: str = "Linf"  # "Linf" | "L2"

    def describe(self, seed: int) -> dict[str, Any]:
        """The settings as recorded in the result JSON's protocol."""
        if self.kind == "nat":
            return {"kind": "nat"}
        if self.kind == "autoattack":
            return {
                "kind": "autoattack",
                "eps": self.eps,
                "norm": self.norm,
                "version": "standard",
                "attacks": list(STANDARD_ATTACKS),
                "seed": seed,
            }
        out = {
            "kind": "pgd",
            "norm": self.norm,
            "eps": self.eps,
            "loss": self.loss,
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": f"uniform in the {self.norm} eps-ball per (seed, image index); not clamped to [0, 1]",
            "seed": seed,
            "classified": "final iterate",
        }
        if self.confidence is not None:
            out["confidence"] = self.confidence
        return out


BASE_ATTACKS: dict[str, AttackSpec] = {
    "nat": AttackSpec("nat", "nat"),
    "pgd20": AttackSpec("pgd20", "pgd", loss="ce", steps=20, step_size=PGD_STEP_SIZE),
    "pgd100": AttackSpec("pgd100", "pgd", loss="ce", steps=100, step_size=PGD_STEP_SIZE),
    "cw20": AttackSpec("cw20", "pgd", loss="cw", steps=20, step_size=PGD_STEP_SIZE, confidence=CW_CONFIDENCE),
    "aa": AttackSpec("aa", "autoattack"),
}
ALIASES = {"sweep": [f"pgd20@{e:g}/255" for e in SWEEP_EPS_255]}
VALID_NAMES = [*BASE_ATTACKS, *ALIASES]


def parse_norm(value: str) -> str:
    """``Linf`` or ``L2`` from what users type (``linf``, ``inf``, ``l2``...)."""
    norm = {"linf": "Linf", "inf": "Linf", "l-inf": "Linf", "l2": "L2", "2": "L2"}.get(str(value).strip().lower())
    if norm is None:
        raise CureZooError(f"unknown norm {value!r}; use Linf or L2")
    return norm


def default_eps(norm: str = "Linf") -> float:
    return DEFAULT_EPS_BY_NORM[parse_norm(norm)]


def parse_eps(value: str | float, norm: str = "Linf") -> float:
    """An epsilon in pixel units of [0, 1] images: ``0.031``, ``8/255``. Under L-inf, rejects eps > 1 with a
    hint (an L2 budget may exceed 1)."""
    text = str(value).strip()
    try:
        eps = parse_number(text)
    except CureZooError:
        raise CureZooError(f"cannot read eps {text!r}; write a number or a fraction, e.g. 8/255") from None
    if eps > 1 and parse_norm(norm) == "Linf":
        raise CureZooError(
            f"eps {text} is larger than 1, but images are in [0, 1]; did you mean {text}/255 (= {eps / 255:.5f})?"
        )
    if not math.isfinite(eps) or not eps > 0:
        raise CureZooError(f"eps must be positive, got {text}")
    return eps


def eps_label(eps: float, norm: str = "Linf") -> str:
    """``8/255`` for L-inf multiples of 1/255 (and quarter steps), else the plain number (always under L2)."""
    if norm == "L2":
        return f"{eps:g}"
    k = eps * 255
    if abs(k * 4 - round(k * 4)) < 1e-6:
        return f"{round(k * 4) / 4:g}/255"
    return f"{eps:g}"


def parse_attacks(
    attacks: str | list[str] | tuple[str, ...], eps: float | None = None, norm: str = "Linf"
) -> list[AttackSpec]:
    """Turn ``"nat,pgd20,cw20,aa"`` (or a list) into attack specs under ``norm`` at ``eps`` (default: the
    norm's, 8/255 or 0.5), in order, without repeats."""
    norm = parse_norm(norm)
    eps = default_eps(norm) if eps is None else eps
    aliases = ALIASES if norm == "Linf" else {"sweep": [f"pgd20@{e:g}" for e in SWEEP_EPS_L2]}
    names = [a.strip() for a in (attacks.split(",") if isinstance(attacks, str) else attacks)]
    names = [a for a in names if a]
    if not names:
        raise CureZooError(f"no attacks given; choose from: {', '.join(VALID_NAMES)}")
    expanded = [n for a in names for n in aliases.get(a.lower(), [a])]
    specs: dict[str, AttackSpec] = {}
    for name in expanded:
        base, _, at = name.partition("@")
        base = base.lower()
        if base not in BASE_ATTACKS:
            raise CureZooError(
                f"unknown attack {name!r}; choose from: {', '.join(VALID_NAMES)} (NAME@EPS for another eps, "
                f"e.g. pgd20@4/255)"
            )
        spec = BASE_ATTACKS[base]
        if spec.kind == "nat":
            specs.setdefault("nat", spec)
            continue
        attack_eps = parse_eps(at, norm) if at else eps
        key = base if abs(attack_eps - eps) < 1e-12 else f"{base}@{eps_label(attack_eps, norm)}"
        if norm == "L2" and spec.kind == "pgd":
            spec = replace(spec, step_size=L2_STEP_FACTOR * attack_eps / spec.steps)
        specs.setdefault(key, replace(spec, name=key, eps=attack_eps, norm=norm))
    return list(specs.values())
