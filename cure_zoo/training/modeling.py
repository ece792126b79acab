"""Building the model a recipe trains and loading the weights it starts from."""

from __future__ import annotations

from collections.abc import Callable

import timm
import torch
import torch.nn as nn

from ..data import get_dataset_info
from ..errors import CureZooError
from .recipe import Recipe


def model_kwargs(recipe: Recipe) -> dict:
    return dict(recipe.model.args, num_classes=get_dataset_info(recipe.data.dataset).num_classes)


def build_model(recipe: Recipe, seed: int | None = None) -> nn.Module:
    """A freshly initialised model of the recipe's architecture (seeded, without touching the global RNG)."""
    import cure_zoo  # noqa: F401  (registers the architectures with timm)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.run.seed if seed is None else seed)
        return timm.create_model(recipe.model.architecture, pretrained=False, **model_kwargs(recipe))


def sync_batchnorm(model: nn.Module, world_size: int, device: torch.device) -> nn.Module:
    """``model`` with its BatchNorm layers as ``torch.nn.SyncBatchNorm`` when several processes train
    (``model.sync_batchnorm``): train-mode forwards then normalise with the statistics of the global batch,
    as one process would. The parameters' and buffers' names stay, so the weights load into the plain
    architecture. One process: ``model`` unchanged (it is the same computation)."""
    if world_size == 1:
        return model
    if device.type != "cuda":
        raise CureZooError(
            f"model.sync_batchnorm=true needs CUDA processes (torch's SyncBatchNorm does not run on {device.type}); "
            f"drop it or train on GPUs"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def compile_model(model: nn.Module, backend: str = "inductor") -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile(model)`` for the training steps, as a forward function.

    A step runs the model in three states, one graph each: train mode with gradients (the loss), eval mode
    with frozen parameters (the attack) and the same without gradients (the KL attack's clean logits). The
    batch dimension is marked dynamic, so the last partial batch and uneven per-process slices reuse those
    graphs instead of adding one per state (with the per-epoch check, which runs on the eager module, they
    used to exceed dynamo's recompile limit of 8, after which forwards silently ran eager).

    CURE takes three backward passes over one graph (``retain_graph=True``). A compiled graph whose backward
    first ran as a single pass (CURE-Eff's natural warm-up, or another method in the same process) gets
    AOTAutograd's donated buffers, and its backward then refuses ``retain_graph``; donated buffers only save
    memory, so they are switched off."""
    import torch._dynamo
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False
    compiled = torch.compile(model, backend=backend)

    def forward(x: torch.Tensor) -> torch.Tensor:
        torch._dynamo.maybe_mark_dynamic(x, 0)
        return compiled(x)

    return forward


def load_init_weights(model: nn.Module, spec: str) -> str:
    """Load the starting weights ``spec`` (a zoo name such as ``st_resnet18_cifar10``, a run directory or a
    ``.safetensors`` file) into ``model``, parameters and BatchNorm buffers; returns their sha256."""
    from ..models.loader import load_model

    loaded = load_model(spec)
    source = loaded.model.state_dict()
    target = model.state_dict()
    mismatched = [k for k in target if k in source and source[k].shape != target[k].shape]
    missing = [k for k in target if k not in source]
    if mismatched or missing:
        what = f"shape mismatch in {mismatched[:3]}" if mismatched else f"missing {missing[:3]}"
        raise CureZooError(
            f"model.init={spec!r} does not fit {type(model).__name__} ({what}); start from a model of the same "
            f"architecture, width and number of classes"
        )
    model.load_state_dict({k: source[k] for k in target}, strict=True)
    return loaded.weights_sha256 or "unknown"
