"""L-inf attacks on [0, 1] images: the one PGD loop and the losses it ascends (CE, CW margin, TRADES KL).

Evaluation (PGD-20/100, CW-inf) and training (PGD-AT, TRADES/CURE inner maximisation) both call
:func:`pgd`; only the loss and the starting point differ.
"""

from .counter_rng import counter_uniform
from .losses import ce_loss, cw_margin_loss, kl_loss
from .pgd import frozen_parameters, gaussian_start, indexed_uniform_start, pgd, uniform_start

__all__ = [
    "ce_loss",
    "counter_uniform",
    "cw_margin_loss",
    "frozen_parameters",
    "gaussian_start",
    "indexed_uniform_start",
    "kl_loss",
    "pgd",
    "uniform_start",
]
