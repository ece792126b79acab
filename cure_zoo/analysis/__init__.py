"""The paper's analyses as library functions: representation similarity (linear CKA), minimum
perturbations and natural corruptions. Each returns a result object with ``to_json``/``save`` and a figure;
``cure-zoo analyze`` runs them from the command line."""

from .cka import CKAResult, MinibatchCKA, cka_matrix, default_layers, hsic_unbiased, linear_cka

__all__ = ["CKAResult", "MinibatchCKA", "cka_matrix", "default_layers", "hsic_unbiased", "linear_cka"]
