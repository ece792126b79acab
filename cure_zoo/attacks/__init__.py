"""L-inf and L2 attacks on [0, 1] images: the one PGD loop and the losses it ascends (CE, CW margin, TRADES KL).

Evaluation (PGD-20/100, CW-inf) and training (PGD-AT, TRADES/CURE inner maximisation) both call
:func:`pgd`; only the loss and the starting point differ.
"""

from .counter_rng import counter_uniform
from .logits import Classified, classify, nonfinite_flag
from .losses import ce_loss, cw_margin_loss, kl_loss
from .pgd import (
    frozen_parameters,
    gaussian_start,
    indexed_l2_start,
    indexed_uniform_start,
    pgd,
    project_l2,
    uniform_start,
)

__all__ = [
    "Classified",
    "ce_loss",
    "classify",
    "counter_uniform",
    "cw_margin_loss",
    "frozen_parameters",
    "gaussian_start",
    "indexed_l2_start",
    "indexed_uniform_start",
    "kl_loss",
    "nonfinite_flag",
    "pgd",
    "project_l2",
    "uniform_start",
]
