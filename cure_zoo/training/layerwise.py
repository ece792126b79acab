"""The paper's layer-wise study (Sec. 3, App. G): after natural training, adversarially train only some blocks.

``U-23`` updates blocks 2 and 3 and freezes the rest: the stem, the other blocks and the classifier ("freezing
block 1, 4, and the final layer 5", App. G). Frozen parameters get ``requires_grad=False`` and are left out
of the optimizer, so weight decay does not move them either; BatchNorm running statistics keep their usual
train-mode updates. With ``reinit`` the updated blocks are first re-initialised with the architecture's own
initialisation (the paper's main study, Fig. 2b); without it they are fine-tuned (Fig. 11).

Blocks are the architecture's stages: ``layer1..4`` (ResNet, PreActResNet) or ``block1..3`` (WideResNet).
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn

from .recipe import LayerwiseConfig, RecipeError

_UPDATE = re.compile(r"^U-([1-9]+)$")


def parse_update(text: str) -> list[int]:
    """``'U-23'`` -> ``[2, 3]``."""
    match = _UPDATE.match(text)
    digits = [int(c) for c in match.group(1)] if match else []
    if not match or len(set(digits)) != len(digits):
        raise RecipeError(f"recipe key 'layerwise.update' must look like 'U-1', 'U-23' or 'U-234', got {text!r}")
    return sorted(digits)


def stage_modules(model: nn.Module) -> dict[int, nn.Module]:
    """Block number (1-based) -> the stage module (``layerN`` or ``blockN``)."""
    stages = {}
    for name, module in model.named_children():
        match = re.fullmatch(r"(?:layer|block)(\d+)", name)
        if match:
            stages[int(match.group(1))] = module
    return stages


def apply_layerwise(model: nn.Module, cfg: LayerwiseConfig, fresh: nn.Module | None = None) -> list[str]:
    """Freeze everything but the blocks ``cfg.update`` names (re-initialised from ``fresh``, a newly
    initialised model of the same architecture, when ``cfg.reinit``). Returns the trainable parameter names."""
    blocks = parse_update(cfg.update)
    stages = stage_modules(model)
    missing = [b for b in blocks if b not in stages]
    if missing:
        raise RecipeError(
            f"recipe key 'layerwise.update' names block(s) {missing} but {type(model).__name__} has blocks "
            f"{sorted(stages)}"
        )
    model.requires_grad_(False)
    fresh_stages = stage_modules(fresh) if fresh is not None else {}
    trainable = []
    for b in blocks:
        if cfg.reinit:
            if fresh is None:
                raise ValueError("layerwise.reinit needs a freshly initialised model")
            with torch.no_grad():
                stages[b].load_state_dict(fresh_stages[b].state_dict())
        stages[b].requires_grad_(True)
    prefixes = tuple(f"{n}." for n, m in model.named_children() if m in [stages[b] for b in blocks])
    trainable = [n for n, p in model.named_parameters() if n.startswith(prefixes)]
    return trainable
