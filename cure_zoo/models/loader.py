"""One entry point that turns what a user types into a model: a registered name, ``hf-hub:ORG/NAME``,
a run directory (``config.json`` + ``model.safetensors``) or a ``.safetensors`` file with a ``config.json``
beside it. The CLI's ``eval`` and ``verify`` and the Python API all load models through here."""

from __future__ import annotations

import difflib
import importlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch.nn as nn
from timm.models import get_pretrained_cfg

from ..errors import CureZooError, PretrainedWeightsError, UnknownModelError
from ..io import sha256_file
from ..rundir import CONFIG_BLOCK, CONFIG_FILE, WEIGHTS_FILE, described_sha256
from ._builder import load_weights_strict
from ._hub import hub_failure_reason, verify_sha256
from .zoo import ZOO, ZooEntry, find_entry


@dataclass
class LoadedModel:
    model: nn.Module
    spec: str  # what the user asked for
    name: str  # registered architecture[.tag] the model was built as
    weights_file: str | None
    weights_sha256: str | None
    entry: ZooEntry | None = None
    zoo_config: dict[str, Any] = field(default_factory=dict)  # config.json's cure_zoo block (claims etc.)


def zoo_names() -> list[str]:
    """Every name ``load_model`` accepts from the zoo: flat names and ``architecture.tag`` names."""
    return sorted({e.name for e in ZOO} | {f"{e.architecture}.{e.arch_tag}" for e in ZOO})


def unknown_model_error(name: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, zoo_names() + timm.list_models("cifar_*"), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return UnknownModelError(f"unknown model {name!r}{hint} (cure-zoo list shows every model)")


def _is_registered(name: str) -> bool:
    if "." not in name:
        return timm.is_model(name)
    try:
        return get_pretrained_cfg(name, allow_unregistered=False) is not None
    except RuntimeError:  # timm: "Invalid pretrained tag"
        return False


def _sha(file: str | None) -> str | None:
    return sha256_file(file) if file and Path(file).is_file() else None


_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # package.module:function


def _factory_model(spec: str, **kwargs: Any) -> nn.Module:
    """``package.module:function`` -> ``function(**kwargs)``, which must return an ``nn.Module``. The module is
    imported as Python imports it (from ``sys.path``, e.g. the current folder): it is the user's own code."""
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise CureZooError(f"cannot import {module_name!r} for the model factory {spec!r} ({err})") from None
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise CureZooError(f"{module_name} has no function {function_name!r} (model factory {spec!r})")
    try:
        model = factory(**kwargs)
    except Exception as err:  # the user's code: its failure is theirs to fix, said in one line
        reason = " ".join(str(err).split())[:160]
        raise CureZooError(f"the model factory {spec!r} raised {type(err).__name__}: {reason}") from None
    if not isinstance(model, nn.Module):
        raise CureZooError(f"the model factory {spec!r} returned a {type(model).__name__}, not a torch nn.Module")
    return model


def _load_weights_file(model: nn.Module, weights: str, name: str) -> str:
    """Load a ``.safetensors`` file into ``model`` the one strict way (every key, every shape:
    :func:`load_weights_strict`); its sha256."""
    path = Path(weights)
    if path.suffix != ".safetensors":
        raise CureZooError(f"--weights {weights}: only .safetensors files are loaded (a pickle can run code)")
    if not path.is_file():
        raise CureZooError(f"--weights {weights} does not exist")
    load_weights_strict(model, path, name)
    return sha256_file(path)


def load_model(spec: str, pretrained: bool = True, weights: str | None = None, **kwargs: Any) -> LoadedModel:
    """Build the model ``spec`` names, in eval mode, with its weights and their sha256.

    ``spec`` may also be any timm model name, or a Python factory ``package.module:function`` (called with
    ``kwargs``) for models outside the zoo; ``weights`` (a ``.safetensors`` file) then supplies the weights
    (with it, a timm model is built without its own pretrained weights)."""
    path = Path(spec)
    if weights is not None and (spec.startswith("hf-hub:") or path.suffix == ".safetensors" or path.is_dir()):
        raise CureZooError(f"--weights goes with a timm model name or a factory, not with {spec} (it has its own)")
    if _FACTORY.match(spec):
        model = _factory_model(spec, **kwargs).eval()
        sha = _load_weights_file(model, weights, spec) if weights else None
        return LoadedModel(model, spec, spec, weights, sha, None)
    if weights is not None and _is_registered(spec):
        model = timm.create_model(spec, pretrained=False, **kwargs).eval()
        return LoadedModel(model, spec, spec, weights, _load_weights_file(model, weights, spec), find_entry(spec))
    if spec.startswith("hf-hub:"):
        model = _create_from_hub(spec, pretrained, **kwargs)
        name = model.pretrained_cfg.get("architecture", spec)
        entry = None
    elif path.suffix == ".safetensors" or path.is_dir():
        return _load_local(path, **kwargs)
    elif _is_registered(spec):
        model = timm.create_model(spec, pretrained=pretrained, **kwargs)
        name, entry = spec, find_entry(spec)
    elif "/" in spec or spec.startswith("."):  # meant as a path: say that, not "unknown model"
        return _load_local(path, **kwargs)
    else:
        raise unknown_model_error(spec)
    file = model.pretrained_cfg.get("file") if pretrained else None
    zoo_config: dict[str, Any] = {}
    if pretrained and entry is not None and entry.weights_source == "package":
        # a model shipped in the package is a run directory: its config.json carries the card's claims
        zoo_config = read_run_config(entry.bundled_dir).get(CONFIG_BLOCK) or {}
    return LoadedModel(model.eval(), spec, name, file, _sha(file), entry, zoo_config)


def _create_from_hub(spec: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """``timm.create_model('hf-hub:...')``; timm fetches config.json itself, so its Hub errors are turned
    into one clear line here."""
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    repo_id = spec.removeprefix("hf-hub:").split("@", 1)[0]
    try:  # before timm sees it: ``hf-hub:``, ``hf-hub:../..`` are no repository
        validate_repo_id(repo_id)
        if "/" not in repo_id:
            raise HFValidationError("no ORG/ part")
    except HFValidationError as err:
        reason = " ".join(str(err).split())[:160]
        raise CureZooError(f"{spec!r} names no Hub repository ({reason}); write hf-hub:ORG/NAME[@REVISION]") from None
    try:
        return timm.create_model(spec, pretrained=pretrained, **kwargs)
    except CureZooError:
        raise
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        raise PretrainedWeightsError(f"cannot load {spec}: {hub_failure_reason(err)}") from None


def read_run_config(directory: Path) -> dict[str, Any]:
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise CureZooError(
            f"{directory} has no {CONFIG_FILE}, so the architecture is unknown; a run directory from "
            f"recipes/train.py or a Hub snapshot has one"
        )
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CureZooError(f"{cfg_path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError:
        raise CureZooError(f"{cfg_path} is not JSON text (not UTF-8)") from None
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise CureZooError(f"{cfg_path} names no 'architecture'; it is not a timm model config (a JSON object)")
    for key, kind in (("model_args", dict), (CONFIG_BLOCK, dict), ("num_classes", int)):
        if config.get(key) is not None and not isinstance(config[key], kind):
            raise CureZooError(f"{cfg_path}: {key!r} must be {kind.__name__}, got {type(config[key]).__name__}")
    return config


def _load_local(path: Path, **kwargs: Any) -> LoadedModel:
    if not path.exists():
        raise CureZooError(
            f"{path} does not exist; pass a registered model name, hf-hub:ORG/NAME, a run "
            f"directory or a .safetensors file"
        )
    directory, weights = (path, path / WEIGHTS_FILE) if path.is_dir() else (path.parent, path)
    if not weights.is_file():
        raise CureZooError(f"{directory} has no {WEIGHTS_FILE}; is the training run finished?")
    config = read_run_config(directory)
    zoo_config = config.get(CONFIG_BLOCK) or {}
    expected = described_sha256(zoo_config, weights.name)  # model.safetensors's, or the best epoch's
    if expected:
        verify_sha256(weights, expected, str(weights))
    arch = config["architecture"]
    if not timm.is_model(arch):
        raise unknown_model_error(arch)
    model_args = dict(config.get("model_args") or {}, **kwargs)
    overlay = dict(file=str(weights))
    if "num_classes" in config:
        if model_args.get("num_classes", config["num_classes"]) != config["num_classes"]:
            raise CureZooError(
                f"{directory / CONFIG_FILE} is inconsistent: num_classes {config['num_classes']!r} but model_args "
                f"num_classes {model_args['num_classes']!r}; correct it to the class count of the weights"
            )
        model_args["num_classes"] = overlay["num_classes"] = config["num_classes"]
    try:  # built without weights, then loaded strictly: every tensor of the verified file, or an error
        model = timm.create_model(arch, pretrained=False, pretrained_cfg_overlay=overlay, **model_args)
    except (TypeError, ValueError, KeyError, RuntimeError, AssertionError) as err:
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise CureZooError(
            f"{directory / CONFIG_FILE}: cannot build {arch!r} with model_args {model_args!r} ({reason})"
        ) from None
    load_weights_strict(model, weights, arch)
    return LoadedModel(model.eval(), str(path), arch, str(weights), sha256_file(weights), find_entry(arch), zoo_config)
