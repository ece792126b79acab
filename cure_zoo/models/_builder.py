"""Shared model-building pieces: pretrained cfgs from the zoo table, the checkpoint filter, the builder, and
the loop that registers each family's zoo names with timm."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file as load_safetensors
from timm.models import build_model_with_cfg, register_model
from timm.models._builder import resolve_pretrained_cfg

from ..errors import WeightsIntegrityError
from .zoo import ZooEntry, find_entry, zoo_entries

_logger = logging.getLogger(__name__)

PAPER_ARXIV = "arXiv:2401.14948"


def cfg(**kwargs: Any) -> dict[str, Any]:
    """A pretrained cfg for 32x32 CIFAR-style models taking [0, 1] inputs (identity normalisation)."""
    return {
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (4, 4),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.0, 0.0, 0.0),
        "std": (1.0, 1.0, 1.0),
        "first_conv": "conv1",
        "paper_ids": PAPER_ARXIV,
        "paper_name": "Conserve-Update-Revise to Cure Generalization and Robustness Trade-off in Adversarial Training",
        **kwargs,
    }


def entry_cfg(entry: ZooEntry, **kwargs: Any) -> dict[str, Any]:
    """The pretrained cfg of one zoo entry."""
    return cfg(
        num_classes=entry.num_classes,
        hf_hub_id=entry.hf_hub_id,
        source=entry.weights_source if entry.weights_source in ("pyautoattack", "package") else None,
        license=entry.license,
        origin_url=entry.origin_url,
        description=entry.description or f"{entry.method.upper()} {entry.arch} trained on {entry.dataset}",
        **kwargs,
    )


def family_cfgs(arch_defaults: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Cfg dict for ``generate_default_cfgs``: each architecture with its zoo tags, then every flat zoo name.

    ``arch_defaults`` maps a short architecture name (``resnet18``) to cfg overrides of that architecture
    (``classifier``, ``pool_size``).
    """
    out: dict[str, dict[str, Any]] = {}
    for arch, overrides in arch_defaults.items():
        entries = zoo_entries(arch)
        architecture = f"cifar_{arch}"
        if not entries:
            out[architecture] = cfg(**overrides)
        for e in entries:
            out[f"{architecture}.{e.arch_tag}"] = entry_cfg(e, **overrides)
    for arch, overrides in arch_defaults.items():
        for e in zoo_entries(arch):
            out[e.name] = entry_cfg(e, **overrides)
    return out


def register_zoo_names(module_name: str, arch_entrypoints: dict[str, Callable[..., nn.Module]]) -> None:
    """Register every flat zoo name of these architectures as a timm entrypoint of ``module_name``.

    ``arch_entrypoints`` maps a short architecture name to its builder ``fn(variant, pretrained, **kwargs)``.
    The flat names are generated here instead of written out as 30-odd one-line functions.
    """
    for arch, build in arch_entrypoints.items():
        for model_name in sorted({e.model_name for e in zoo_entries(arch)}):

            def entrypoint(pretrained: bool = False, _name: str = model_name, _build=build, **kwargs):
                return _build(_name, pretrained, **kwargs)

            entrypoint.__name__ = entrypoint.__qualname__ = model_name
            entrypoint.__module__ = module_name
            entrypoint.__doc__ = f"{model_name}: see cure_zoo.models.zoo."
            setattr(sys.modules[module_name], model_name, register_model(entrypoint))


def checkpoint_filter_fn(state_dict: dict[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    """Accept checkpoints in the authors' layout: bare state dicts or dicts under ``state_dict``/``model``,
    with or without DataParallel/DDP ``module.`` prefixes. Our module names equal the authors', so no key
    is renamed."""
    for key in ("state_dict", "model"):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
            break
    out = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            continue
        out[k.removeprefix("module.")] = v
    return out


def read_weights(file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or the authors' ``.pt``/``.pth`` (``torch.load`` with
    ``weights_only=True``, so no pickled code runs). An unreadable file is one clear error."""
    path = str(file)
    try:
        if path.endswith(".safetensors"):
            state_dict = load_safetensors(path, device="cpu")
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise WeightsIntegrityError(f"cannot read weights {path}: {err.strerror or err}") from None
    except Exception as err:  # safetensors' and pickle's many ways to say "not a weights file"
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise WeightsIntegrityError(
            f"{path} is not a readable weights file (truncated or not safetensors: {reason}); restore it or "
            f"download/train it again"
        ) from None
    if not isinstance(state_dict, dict):
        raise WeightsIntegrityError(f"{path} holds a {type(state_dict).__name__}, not a dict of tensors")
    return state_dict


def load_weights_strict(
    model: nn.Module, file: str | os.PathLike, name: str, *, reset_classifier: bool = False
) -> nn.Module:
    """Load every tensor of ``file`` into ``model`` or fail: a tensor the model lacks, a model tensor the file
    lacks, or a shape that differs is a :class:`WeightsIntegrityError` listing them. (timm itself drops the
    classifier quietly when the class counts differ, which evaluated a random head.) The one exception is
    timm's fine-tuning convention, asked for explicitly with ``num_classes`` != the weights' class count
    (``reset_classifier``): the classifier is then left freshly initialised, and that is logged."""
    state_dict = checkpoint_filter_fn(read_weights(file), model)
    classifier = model.pretrained_cfg.get("classifier") or "fc"
    if reset_classifier:
        for key in (f"{classifier}.weight", f"{classifier}.bias"):
            state_dict.pop(key, None)
        _logger.warning("%s: classifier %s re-initialised for num_classes=%s", name, classifier, model.num_classes)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not (reset_classifier and k.startswith(classifier))]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} of a different shape (e.g. {k}: {tuple(state_dict[k].shape)} in the file, "
                f"{tuple(own[k].shape)} in the model)"
            )
        if missing:
            parts.append(f"{len(missing)} missing from the file (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} the model does not have (e.g. {unexpected[0]})")
        raise WeightsIntegrityError(
            f"the weights in {file} do not fit {name}: tensors {'; '.join(parts)}; nothing was loaded. The file is "
            f"for another architecture or other model_args/num_classes than config.json says, or it is damaged"
        )
    model.load_state_dict(state_dict, strict=not reset_classifier)
    return model


def build_zoo_model(model_cls: type[nn.Module], variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """timm's ``build_model_with_cfg``, with the zoo's weight resolution in front of it.

    The weights file is resolved here (Hub download with sha256 check, the pyautoattack file, or a local
    file), so that timm only ever loads a local file and every failure becomes one clear error.
    """
    pretrained_cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.pop("pretrained_cfg", None),
        pretrained_cfg_overlay=kwargs.pop("pretrained_cfg_overlay", None),
    )
    name = variant if pretrained_cfg.tag is None else f"{variant}.{pretrained_cfg.tag}"
    entry = find_entry(name)
    if entry is not None and pretrained_cfg.source != "hf-hub":
        # The Hub org comes from CURE_ZOO_HF_ORG when the model is created, not when cure_zoo was imported.
        pretrained_cfg = replace(pretrained_cfg, hf_hub_id=entry.hf_hub_id)
    if pretrained:
        from ..hub.weights import resolve_weights_file

        file = resolve_weights_file(pretrained_cfg, name, entry)
        if file is not None:
            # the weights are loaded here, strictly, not by timm (see load_weights_strict)
            pretrained_cfg = replace(pretrained_cfg, file=file, source=None)
            model = build_model_with_cfg(model_cls, variant, False, pretrained_cfg=pretrained_cfg, **kwargs)
            reset = "num_classes" in kwargs and kwargs["num_classes"] != pretrained_cfg.num_classes
            return load_weights_strict(model, file, name, reset_classifier=reset)
    return build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_cfg=pretrained_cfg,
        pretrained_filter_fn=checkpoint_filter_fn,
        **kwargs,
    )
