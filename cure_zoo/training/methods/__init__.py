"""The training methods, one module each: ST, AT (with the layer-wise study), TRADES, CURE and CURE-Eff."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from ..recipe import Recipe
from .at import AdversarialTraining
from .base import Batch, Method, StepContext
from .cure import Cure, CureEff
from .st import NaturalTraining
from .trades import Trades

# method name (cure_zoo.models.zoo.METHODS) -> its class, by the class's own ``name``
METHOD_CLASSES: dict[str, type[Method]] = {
    cls.name: cls for cls in (NaturalTraining, AdversarialTraining, Trades, Cure, CureEff)
}


def build_method(
    recipe: Recipe, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> Method:
    return METHOD_CLASSES[recipe.method](recipe, model, forward)


__all__ = ["Batch", "Method", "StepContext", "build_method"]
