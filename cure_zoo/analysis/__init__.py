"""The paper's analyses as library functions: representation similarity (linear CKA, Sec. 3.2), minimum
perturbations (App. D.1), natural corruptions (Sec. 7, App. D.2) and the gradient statistics a training run
logged (Sec. 5, Fig. 6 and 10; :mod:`.gradstats`). Each returns a result object with
``to_json``/``save`` and a figure; ``cure-zoo analyze`` runs them from the command line (docs/analysis.md)."""

from .cka import CKAResult, MinibatchCKA, cka_matrix, default_layers, hsic_unbiased, linear_cka
from .corruptions import CorruptionResult, evaluate_corruptions, read_corruption
from .minpert import MinPertResult, minimum_perturbation

__all__ = [
    "CKAResult",
    "CorruptionResult",
    "MinPertResult",
    "MinibatchCKA",
    "cka_matrix",
    "default_layers",
    "evaluate_corruptions",
    "hsic_unbiased",
    "linear_cka",
    "minimum_perturbation",
    "read_corruption",
]
