"""Shared model-building pieces: pretrained cfgs from the zoo table, the checkpoint filter, the builder, and
the registration of each family's flat zoo names with timm."""

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
from timm.models import (
    adapt_input_conv,
    build_model_with_cfg,
    create_model,
    register_model,
    resolve_pretrained_cfg,
)

from ..errors import WeightsIntegrityError
from ._hub import resolve_weights_file, shipped_weights_file
from .zoo import ZOO, ZooEntry, find_entry

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
    """The pretrained cfg of one zoo entry.

    Its weights location (what ``timm.list_models(pretrained=True)`` goes by) is set only where the zoo
    vouches for weights: ``hf_hub_id`` with the pinned revision for a published Hub model, ``file`` for
    weights shipped in this package or in pyautoattack. Unpublished models have none, so timm does not list
    them as pretrained; ``pretrained=True`` on them still asks the Hub (``CURE_ZOO_HF_ORG``) at creation.
    """
    return cfg(
        num_classes=entry.num_classes,
        hf_hub_id=entry.hf_hub_id if entry.weights_source == "hub" and entry.published else None,
        file=shipped_weights_file(entry),
        source=entry.weights_source if entry.weights_source in ("pyautoattack", "package") else None,
        license=entry.license,
        origin_url=entry.origin_url,
        description=entry.description or f"{entry.method.upper()} {entry.arch} trained on {entry.dataset}",
        **kwargs,
    )


def family_cfgs(architectures: list[str], **overrides: Any) -> dict[str, dict[str, Any]]:
    """Cfg dict for ``generate_default_cfgs``: each architecture with its zoo tags, then every flat zoo name
    with its tags. ``overrides`` are the family's cfg fields (``classifier``, ``pool_size``).

    Each name's default cfg is its first in the zoo table (``cifar_resnet18`` -> ``cure_cifar10``,
    ``st_resnet18_cifar10`` -> the untagged entry), whichever have weights: timm would otherwise make the first
    tag *with* weights the default, so ``st_resnet18_cifar10`` would silently mean AutoAttack's model. timm's
    marker for that is a trailing ``*``, honoured when the marked cfg comes after the others.
    """
    by_name: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for architecture in architectures:
        entries = [e for e in ZOO if e.architecture == architecture]
        by_name[architecture] = [(e.arch_tag, entry_cfg(e, **overrides)) for e in entries] or [("", cfg(**overrides))]
    for architecture in architectures:
        for e in ZOO:
            if e.architecture == architecture:
                by_name.setdefault(e.model_name, []).append((e.tag, entry_cfg(e, **overrides)))
    out: dict[str, dict[str, Any]] = {}
    for name, tagged in by_name.items():
        (default_tag, default_cfg), *others = tagged
        for tag, tag_cfg in others:
            out[f"{name}.{tag}"] = tag_cfg
        out[f"{name}.{default_tag}*"] = default_cfg
    return out


def register_zoo_entrypoints(
    module_name: str, names_by_architecture: dict[Callable[..., nn.Module], tuple[str, ...]]
) -> tuple[str, ...]:
    """Register each flat zoo name as a timm entrypoint of ``module_name``: its architecture's entrypoint
    (the key) called with the flat name's pretrained cfg. Returns every name registered."""
    registered = []
    for architecture_fn, model_names in names_by_architecture.items():
        for model_name in model_names:
            if find_entry(model_name) is None:
                raise ValueError(f"{model_name} is not in the zoo table (cure_zoo/models/zoo.py)")
            entrypoint = _zoo_entrypoint(model_name, architecture_fn)
            entrypoint.__module__ = module_name
            setattr(sys.modules[module_name], model_name, register_model(entrypoint))
            registered.append(model_name)
    return tuple(registered)


def _zoo_entrypoint(model_name: str, architecture_fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        # The flat name's cfg (or one of its tags, which timm.create_model passes as pretrained_cfg='tag').
        kwargs["pretrained_cfg"] = resolve_pretrained_cfg(
            model_name,
            pretrained_cfg=kwargs.pop("pretrained_cfg", None),
            pretrained_cfg_overlay=kwargs.pop("pretrained_cfg_overlay", None),
        )
        return architecture_fn(pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = model_name
    entrypoint.__doc__ = f"{model_name}: {architecture_fn.__name__} with this zoo model's pretrained cfg (zoo.py)."
    return entrypoint


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
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier") or "fc"
    first_conv = f"{cfg.get('first_conv') or 'conv1'}.weight"
    own_first, file_first = model.state_dict().get(first_conv), state_dict.get(first_conv)
    weights_chans = (cfg.get("input_size") or (3,))[0]
    if (
        own_first is not None
        and file_first is not None
        and file_first.shape[1] == weights_chans != own_first.shape[1]
        and (own_first.shape[0], *own_first.shape[2:]) == (file_first.shape[0], *file_first.shape[2:])
    ):
        # timm's convention for a model built with other in_chans than the weights' (e.g. 1 for grey images):
        # the first convolution's kernels are summed or repeated over input channels (adapt_input_conv); a
        # file whose channels differ from what its config declares is still refused below
        state_dict[first_conv] = adapt_input_conv(own_first.shape[1], file_first)
        _logger.warning("%s: %s adapted from %d to %d input channels", name, first_conv,
                        file_first.shape[1], own_first.shape[1])  # fmt: skip
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
            f"for another architecture or other model_args/num_classes than the model was built with (its "
            f"config.json, or the factory given with --weights), or it is damaged"
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
    # The registered name the cfg belongs to: a flat zoo name's entrypoint passes its own cfg to the
    # architecture's entrypoint (variant), so the cfg, not the variant, names the zoo entry.
    architecture = pretrained_cfg.architecture or variant
    name = architecture if pretrained_cfg.tag is None else f"{architecture}.{pretrained_cfg.tag}"
    entry = find_entry(name)
    if entry is not None and pretrained_cfg.source != "hf-hub":
        # Weights are resolved from the entry: the Hub org comes from CURE_ZOO_HF_ORG when the model is
        # created, not when cure_zoo was imported, and a shipped file is checked (and converted) on the way.
        # A file the caller names (pretrained_cfg_overlay=dict(file=...)) is loaded as given.
        shipped = pretrained_cfg.file is not None and pretrained_cfg.file == shipped_weights_file(entry)
        pretrained_cfg = replace(
            pretrained_cfg, hf_hub_id=entry.hf_hub_id, file=None if shipped else pretrained_cfg.file
        )
    if pretrained:
        file = resolve_weights_file(pretrained_cfg, name, entry)
        if file is not None:
            pretrained_cfg = replace(pretrained_cfg, file=file, source=None)
            if kwargs.get("features_only"):
                # the feature wrapper has no classifier: timm loads the verified file into the whole network,
                # strictly (every tensor, same shapes; in_chans adapted as timm does), and then wraps it
                return build_model_with_cfg(
                    model_cls,
                    variant,
                    True,
                    pretrained_cfg=pretrained_cfg,
                    pretrained_filter_fn=checkpoint_filter_fn,
                    pretrained_strict=True,
                    **kwargs,
                )
            # the weights are loaded here, strictly, not by timm (see load_weights_strict)
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


def param_count(architecture: str, num_classes: int, model_args: dict[str, Any]) -> int:
    """Parameters of ``architecture`` built with ``model_args`` (on the meta device: nothing is allocated)."""
    with torch.device("meta"):
        model = create_model(architecture, num_classes=num_classes, **model_args)
    return sum(p.numel() for p in model.parameters())
