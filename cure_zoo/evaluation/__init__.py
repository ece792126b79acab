"""Robustness evaluation: Nat, PGD-20/100, CW-inf, AutoAttack, the epsilon sweep, and the metrics (Wilson
intervals, worst case, NRR, SUM). :func:`evaluate` is the one entry point; :class:`EvalResult` its result
and JSON form; :func:`evaluate_chunked` the same in resumable chunks. See :mod:`.protocol` for the exact attack
settings."""

from .chunked import evaluate_chunked
from .engine import DEFAULT_ATTACKS, evaluate
from .metrics import accuracy_summary, nrr, wilson_interval, worst_case
from .protocol import BASE_ATTACKS, DEFAULT_EPS, VALID_NAMES, AttackSpec, parse_attacks, parse_eps
from .result import SCHEMA, EvalResult

__all__ = [
    "BASE_ATTACKS",
    "DEFAULT_ATTACKS",
    "DEFAULT_EPS",
    "SCHEMA",
    "VALID_NAMES",
    "AttackSpec",
    "EvalResult",
    "accuracy_summary",
    "evaluate",
    "evaluate_chunked",
    "nrr",
    "parse_attacks",
    "parse_eps",
    "wilson_interval",
    "worst_case",
]
