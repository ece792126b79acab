"""A training process for the run tests (started with ``python`` or ``torchrun``): trains the recipe given by
``--set`` overrides into OUT and saves this process's final weights (and revision model) as
``OUT/rank<R>.safetensors``, so the test can compare processes bit for bit.

It also registers two test architectures (importing this module registers them in the importing process too):

* ``tiny_groupnorm_resnet``: the tiny ResNet-18 with every BatchNorm replaced by GroupNorm, a model without
  batch statistics, so that a 2-process run can be compared with a 1-process run on the same global batch
  (BatchNorm would normalise each process's half-batch with its own statistics);
* ``float64_resnet``: the same ResNet-18 (``groupnorm=True``: the GroupNorm one) computing in float64, its
  float32 input images cast on entry. Runs that differ only in how the work is split or laid out in memory
  (processes, channels_last) then agree to ~1e-15 instead of diverging from float32 rounding: CURE's PGD steps
  by sign(grad) and its RGP masks cut at a percentile, so a rounding-level difference flips a step or a mask
  entry and moves the weights by ~1e-3 (see the tests that use it).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")

import timm  # noqa: E402
import torch.nn as nn  # noqa: E402
from timm.models import register_model  # noqa: E402

import cure_zoo  # noqa: E402,F401


def _to_groupnorm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(2, child.num_features))
        else:
            _to_groupnorm(child)


@register_model
def tiny_groupnorm_resnet(pretrained: bool = False, **kwargs):
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("pretrained_cfg") and k != "cache_dir"}
    model = timm.create_model("cifar_resnet18", **kwargs)
    _to_groupnorm(model)
    return model


def _inputs_to_float64(module: nn.Module, args: tuple) -> tuple:
    return (args[0].double(), *args[1:])


@register_model
def float64_resnet(pretrained: bool = False, groupnorm: bool = False, **kwargs):
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("pretrained_cfg") and k != "cache_dir"}
    model = tiny_groupnorm_resnet(**kwargs) if groupnorm else timm.create_model("cifar_resnet18", **kwargs)
    model.double().register_forward_pre_hook(_inputs_to_float64)
    return model


def main(argv: list[str]) -> int:
    from cure_zoo import distributed as du
    from cure_zoo.io import save_weights
    from cure_zoo.training.recipe import load_recipe, parse_override
    from cure_zoo.training.trainer import RunInterrupted, Trainer

    out, overrides = argv[0], argv[1:]
    recipe = load_recipe(None, dict(parse_override(o) for o in overrides))
    info, device = du.init_distributed(recipe.run.device)
    trainer = Trainer(recipe, out, info, device)
    try:
        trainer.run()
    except RunInterrupted:
        return 143
    state = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    revision = getattr(trainer.method, "revision", None)
    if revision is not None:
        state.update({f"revision.{k}": v for k, v in revision.module.state_dict().items()})
    save_weights(state, os.path.join(out, f"rank{info.rank}.safetensors"))
    du.shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
