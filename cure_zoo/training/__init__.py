"""Training: natural (ST), PGD-AT, TRADES, CURE and CURE-Eff from YAML recipes, on one or many processes.

``recipes/train.py`` is the command-line entry point; in Python::

    from cure_zoo.training import load_recipe, train
    train(load_recipe("smoke_cure_cifar10"), "runs/smoke")
"""

from .recipe import PRESETS, Recipe, RecipeError, available_recipes, load_recipe
from .trainer import RunInterrupted, RunResult, TrainingDivergedError, train

__all__ = [
    "PRESETS",
    "Recipe",
    "RecipeError",
    "RunInterrupted",
    "RunResult",
    "TrainingDivergedError",
    "available_recipes",
    "load_recipe",
    "train",
]
