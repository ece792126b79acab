"""Training recipes: a typed schema, YAML loading, named presets and ``--set key=value`` overrides.

A recipe is a YAML file of nested sections (``model``, ``data``, ``optim``, ``attack``, ``trades``, ``cure``,
``layerwise``, ``eval``, ``checkpoint``, ``run``) plus a few top-level keys (``name``, ``method``,
``model_name``, ``preset``). Every key has a type and a default below; an unknown key, a value of the wrong
type or an out-of-range value is a :class:`RecipeError` that names the key.

Values are resolved in this order, later winning:

1. the schema defaults (the dataclasses below);
2. the CURE preset (``paper`` or ``official``; CURE and CURE-Eff only, ``paper`` unless the recipe says);
3. the recipe file;
4. ``--set section.key=value`` overrides from the command line.

The resolved recipe (every key, with the preset and any key that departs from it) is written into the run's
``config.json`` and ``train_hparams.yaml``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import CureZooError
from ..models.zoo import CURE_METHODS, MethodName
from ..parsing import load_yaml, parse_number

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"  # package data: ships in the wheel


class RecipeError(CureZooError, ValueError):
    """A recipe that cannot be used: unknown key, wrong type, value out of range, missing file."""


@dataclass
class ModelConfig:
    architecture: str = "cifar_resnet18"  # a registered timm entrypoint
    args: dict[str, Any] = field(default_factory=dict)  # extra create_model kwargs (e.g. tiny ``widths``)
    init: str | None = None  # starting weights: zoo name, run directory or .safetensors file (CURE: the st_ model)
    channels_last: bool = False
    compile: bool = False  # torch.compile the training model (GPU runs)
    # BatchNorm statistics over the global batch in train-mode forwards (torch.nn.SyncBatchNorm; several CUDA
    # processes only): without it each process normalises its own slice
    sync_batchnorm: bool = False


@dataclass
class DataConfig:
    dataset: str = "cifar10"
    source: Literal["torchvision", "bundled"] = "torchvision"  # bundled: the 5,438 real CIFAR-10 train images
    root: str | None = None  # torchvision data folder (default ./data)
    download: bool = False
    train_examples: int | None = None  # use only the first N training images (None: all)
    augment: bool = True  # RandomCrop(32, padding=4) + horizontal flip
    drop_last: bool = False  # the official loader keeps the last partial batch


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    epochs: int = 200
    milestones: list[int] = field(default_factory=lambda: [100, 150])  # 1-based epochs whose start decays the lr
    gamma: float = 0.1
    batch_size: int = 128  # global batch, split over processes


@dataclass
class AttackConfig:
    """Training-time inner maximisation (PGD). ``None`` means the method's default (AT: CE from a uniform
    start; TRADES/CURE: KL from x + 0.001 N(0, I))."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    objective: Literal["ce", "kl", "ce_kl"] | None = None  # ce_kl: Algorithm 1 line 7, CE + alpha KL
    start: Literal["uniform", "gaussian"] | None = None
    start_std: float = 0.001


@dataclass
class TradesConfig:
    beta: float = 6.0


@dataclass
class CureConfig:
    beta: float = 1.0  # KL weight in L_adv (Eq. 5: 1; official code: 5)
    p: float = 30.0  # percent of each masked tensor's gradient entries zeroed
    alpha: float = 0.1  # RGP weight of the natural gradient
    gamma: float = 1.0  # weight of the consistency loss L_CR
    masking: Literal["rgp", "rgp_soft", "none"] = "rgp"
    # the ablation switches of App. C.3 (Table 7): false trains without the component
    rgp: bool = True  # the RGP gradient mask (off: the whole gradient updates every entry)
    revise: bool = True  # the revision stage (off: no revision model, no SMU and no L_CR, so L = L_adv)
    revision_rate: float = 0.2  # r
    revision_decay: float = 0.999  # d
    decay_warmup: bool = True  # d_t = min(1 - 1/(t+1), d)
    rate_decay: Literal["code", "off", "per_epoch"] = "code"
    rate_decay_after: int = 100  # epochs after which the revision rate decays
    natural_warmup_epochs: int = 79  # CURE-Eff only: natural epochs before CURE starts


@dataclass
class LayerwiseConfig:
    """The paper's layer-wise study (Sec. 3, App. G), an option of AT: update only the blocks named by
    ``update`` (``U-23``: blocks 2 and 3), freezing the stem, the other blocks and the classifier."""

    update: str | None = None
    reinit: bool = False  # re-initialise the updated blocks first (the paper's main study)


@dataclass
class EvalConfig:
    every: int = 1  # epochs between evaluations (the last epoch is always evaluated); 0: never
    examples: int = 1000  # first N images of the test split
    batch_size: int = 256
    pgd_steps: int = 20
    pgd_eps: float = 8 / 255
    pgd_step_size: float = 0.003
    seed: int = 0


@dataclass
class CheckpointConfig:
    every_steps: int = 200  # also after every epoch; 0: only after every epoch
    save_best: bool = True  # keep model_best.safetensors (highest PGD-20 accuracy)


@dataclass
class RunConfig:
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: Literal["none", "bf16"] = "none"
    log_every: int = 20
    # steps between gradient statistics (per tensor: mean |gradient| and the share of entries the RGP mask lets
    # through, or would let through for methods without one; Sec. 5, Fig. 6 and 10) in metrics.jsonl; 0: off
    grad_stats_every: int = 0
    progress: bool = True
    tensorboard: bool = True  # when the tensorboard package is installed


@dataclass
class Recipe:
    name: str = "unnamed"
    method: MethodName = "cure"
    model_name: str | None = None  # the zoo model this recipe produces, e.g. cure_resnet18_cifar10
    preset: Literal["paper", "official"] | None = None
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    trades: TradesConfig = field(default_factory=TradesConfig)
    cure: CureConfig = field(default_factory=CureConfig)
    layerwise: LayerwiseConfig = field(default_factory=LayerwiseConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def is_cure(self) -> bool:
        return self.method in CURE_METHODS


# The two named CURE settings (the CURE paper's App. F.1 and Table 9 vs the authors' code). Keys are dotted recipe keys.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "cure.masking": "rgp",
        "cure.beta": 1.0,
        "optim.weight_decay": 5e-3,
        "attack.eps": 8 / 255,
        "attack.step_size": 2 / 255,
        "cure.rate_decay": "code",
    },
    "official": {
        "cure.masking": "rgp_soft",
        "cure.beta": 5.0,
        "optim.weight_decay": 5e-4,
        "attack.eps": 0.031,
        "attack.step_size": 0.007,
        "cure.rate_decay": "off",
    },
}

_SECTIONS = {
    f.name
    for f in dataclasses.fields(Recipe)
    if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory())
}


# ---------------------------------------------------------------------------------------------------------
# type checking


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string", type(None): "null"}.get(
        tp, str(tp)
    )


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against ``tp`` (ints are accepted for floats); RecipeError naming ``key`` if not."""
    origin = typing.get_origin(tp)
    ok, out = False, value
    if origin is Literal:
        ok = value in typing.get_args(tp)
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except RecipeError:
                continue
    elif origin is list:
        if isinstance(value, list):
            (item,) = typing.get_args(tp)
            return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        ok = isinstance(value, dict)
    elif tp is type(None):
        ok = value is None
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if isinstance(value, str) and "/" in value:  # a fraction, e.g. 8/255: read as the evaluator reads it
            with contextlib.suppress(CureZooError):
                value, ok = parse_number(value), True
        ok = ok and math.isfinite(value)
        out = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    if not ok:
        raise RecipeError(f"recipe key {key!r} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return out


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown_key(key: str, known: list[str]) -> RecipeError:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return RecipeError(f"unknown recipe key {key!r}{hint}")


def all_keys() -> list[str]:
    """Every dotted key a recipe may set."""
    keys = []
    for name, tp in _hints(Recipe).items():
        if name in _SECTIONS:
            keys += [f"{name}.{k}" for k in _hints(tp)]
        else:
            keys.append(name)
    return keys


def _set(recipe: Recipe, key: str, value: Any) -> None:
    parts = key.split(".")
    hints = _hints(Recipe)
    if len(parts) == 1 and parts[0] in hints and parts[0] not in _SECTIONS:
        setattr(recipe, parts[0], _coerce(value, hints[parts[0]], key))
        return
    if len(parts) != 2 or parts[0] not in _SECTIONS:
        raise _unknown_key(key, all_keys())
    section = getattr(recipe, parts[0])
    section_hints = _hints(type(section))
    if parts[1] not in section_hints:
        raise _unknown_key(key, all_keys())
    setattr(section, parts[1], _coerce(value, section_hints[parts[1]], key))


def _flatten(mapping: dict[str, Any], where: str) -> dict[str, Any]:
    """Recipe-file mapping -> dotted keys (sections one level deep; model.args kept whole)."""
    flat = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise RecipeError(f"{where}: recipe keys must be strings, got {key!r}")
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise RecipeError(f"{where}: recipe section {key!r} must be a mapping, got {value!r}")
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[key] = value
    return flat


# ---------------------------------------------------------------------------------------------------------
# loading


def find_recipe(name_or_path: str, recipes_dir: Path = RECIPES_DIR) -> Path:
    """A recipe file: a path to a YAML file, or the name of one in ``cure_zoo/recipes/`` (without ``.yaml``)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        if not path.is_file():
            raise RecipeError(f"recipe file {str(path)!r} does not exist")
        return path
    candidate = recipes_dir / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    names = available_recipes(recipes_dir)
    close = difflib.get_close_matches(name_or_path, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; available: {', '.join(names)}"
    raise RecipeError(f"no recipe named {name_or_path!r} in {recipes_dir}{hint}")


def available_recipes(recipes_dir: Path = RECIPES_DIR) -> list[str]:
    return sorted(p.stem for p in recipes_dir.glob("*.yaml"))


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` with the value read as YAML (``0.1``, ``true``, ``[100, 150]``, ``null``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set expects key=value (e.g. cure.beta=5), got {text!r}")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_recipe(
    name_or_path: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    recipes_dir: Path = RECIPES_DIR,
) -> Recipe:
    """Build a validated recipe from a file (or the defaults), the preset it selects and overrides."""
    file_values: dict[str, Any] = {}
    where = "defaults"
    if name_or_path is not None:
        path = find_recipe(name_or_path, recipes_dir)
        where = str(path)
        try:
            data = load_yaml(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            reason = str(err).splitlines()[0] if isinstance(err, yaml.YAMLError) else "not UTF-8 text"
            raise RecipeError(f"{path} is not a valid YAML recipe ({reason})") from None
        except OSError as err:
            raise RecipeError(f"cannot read recipe {path}: {err.strerror}") from None
        if not isinstance(data, dict):
            raise RecipeError(f"{path} must hold a mapping of recipe keys, got {type(data).__name__}")
        file_values = _flatten(data, where)
        file_values.setdefault("name", path.stem)
    if isinstance(overrides, dict):
        set_values = dict(overrides)
    else:
        set_values = dict(parse_override(o) for o in overrides or [])
    return build_recipe(file_values, set_values)


def build_recipe(file_values: dict[str, Any], set_values: dict[str, Any] | None = None) -> Recipe:
    """Defaults < preset < ``file_values`` < ``set_values`` (dotted keys), then validation."""
    set_values = set_values or {}
    recipe = Recipe()
    # method and preset first: they decide which preset applies
    for key in ("method", "preset"):
        for source in (file_values, set_values):
            if key in source:
                _set(recipe, key, source[key])
    if recipe.is_cure and recipe.preset is None:
        recipe.preset = "paper"
    if recipe.preset is not None:
        if not recipe.is_cure:
            raise RecipeError(
                f"recipe key 'preset' applies to CURE and CURE-Eff recipes only (method is {recipe.method!r}); "
                f"remove it"
            )
        for key, value in PRESETS[recipe.preset].items():
            _set(recipe, key, value)
    for source in (file_values, set_values):
        for key, value in source.items():
            if key not in ("method", "preset"):
                _set(recipe, key, value)
    resolve_method_defaults(recipe)
    validate(recipe)
    return recipe


def resolve_method_defaults(recipe: Recipe) -> None:
    """Fill the ``None`` attack settings with the method's own (written resolved into the run's config)."""
    if recipe.attack.objective is None:
        recipe.attack.objective = "ce" if recipe.method == "at" else "kl"
    if recipe.attack.start is None:
        recipe.attack.start = "uniform" if recipe.method == "at" else "gaussian"


def preset_departures(recipe: Recipe) -> dict[str, Any]:
    """Keys whose value differs from the recipe's preset (empty when it has none)."""
    if recipe.preset is None:
        return {}
    flat = {f"{s}.{k}": v for s, sec in recipe.to_dict().items() if isinstance(sec, dict) for k, v in sec.items()}
    return {k: flat[k] for k, v in PRESETS[recipe.preset].items() if flat[k] != v}


# ---------------------------------------------------------------------------------------------------------
# value checks


def _check(ok: bool, key: str, what: str, value: Any) -> None:
    if not ok:
        raise RecipeError(f"recipe key {key!r} {what}, got {value!r}")


def validate(recipe: Recipe) -> None:
    """Range and consistency checks; each failure names the key."""
    import timm

    import cure_zoo  # noqa: F401  (registers the zoo's architectures)

    from ..data.catalog import DATASETS
    from ..models.zoo import find_entry

    m, d, o, a, c, e = recipe.model, recipe.data, recipe.optim, recipe.attack, recipe.cure, recipe.eval
    _check(timm.is_model(m.architecture), "model.architecture", "must be a registered timm model", m.architecture)
    _check("num_classes" not in m.args, "model.args", "must not set num_classes (it follows data.dataset)", m.args)
    _check(d.dataset in DATASETS, "data.dataset", f"must be one of {', '.join(DATASETS)}", d.dataset)
    _check(d.source == "torchvision" or d.dataset == "cifar10", "data.source", "bundled exists for cifar10", d.source)
    _check(d.train_examples is None or d.train_examples >= 1, "data.train_examples", "must be >= 1", d.train_examples)
    _check(o.lr > 0, "optim.lr", "must be > 0", o.lr)
    _check(0 <= o.momentum < 1, "optim.momentum", "must be in [0, 1)", o.momentum)
    _check(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0", o.weight_decay)
    _check(o.epochs >= 1, "optim.epochs", "must be >= 1", o.epochs)
    _check(o.batch_size >= 1, "optim.batch_size", "must be >= 1", o.batch_size)
    _check(0 < o.gamma <= 1, "optim.gamma", "must be in (0, 1]", o.gamma)
    _check(o.milestones == sorted(set(o.milestones)), "optim.milestones", "must be increasing", o.milestones)
    _check(all(x >= 1 for x in o.milestones), "optim.milestones", "must be 1-based epochs", o.milestones)
    _check(a.eps >= 0, "attack.eps", "must be >= 0", a.eps)
    _check(a.step_size >= 0, "attack.step_size", "must be >= 0", a.step_size)
    _check(a.steps >= 1, "attack.steps", "must be >= 1", a.steps)
    _check(a.start_std >= 0, "attack.start_std", "must be >= 0", a.start_std)
    _check(recipe.trades.beta >= 0, "trades.beta", "must be >= 0", recipe.trades.beta)
    _check(c.beta >= 0, "cure.beta", "must be >= 0", c.beta)
    _check(0 <= c.p < 100, "cure.p", "must be a percentage in [0, 100)", c.p)
    _check(0 <= c.alpha <= 1, "cure.alpha", "must be in [0, 1]", c.alpha)
    _check(c.gamma >= 0, "cure.gamma", "must be >= 0", c.gamma)
    _check(0 <= c.revision_rate <= 1, "cure.revision_rate", "must be in [0, 1]", c.revision_rate)
    _check(0 <= c.revision_decay < 1, "cure.revision_decay", "must be in [0, 1)", c.revision_decay)
    _check(c.rate_decay_after >= 0, "cure.rate_decay_after", "must be >= 0", c.rate_decay_after)
    for key, on in (("cure.rgp", c.rgp), ("cure.revise", c.revise)):
        _check(on or recipe.is_cure, key, f"switches off a CURE component (method is {recipe.method!r})", on)
    if recipe.method == "cure_eff":
        ok = 1 <= c.natural_warmup_epochs < o.epochs
        _check(ok, "cure.natural_warmup_epochs", f"must be in [1, optim.epochs={o.epochs})", c.natural_warmup_epochs)
    if recipe.layerwise.update is not None:
        _check(recipe.method == "at", "layerwise.update", "is an option of method 'at'", recipe.layerwise.update)
        from .layerwise import parse_update

        parse_update(recipe.layerwise.update)
    _check(e.every >= 0, "eval.every", "must be >= 0", e.every)
    _check(e.examples >= 1, "eval.examples", "must be >= 1", e.examples)
    _check(e.batch_size >= 1, "eval.batch_size", "must be >= 1", e.batch_size)
    _check(e.pgd_steps >= 0, "eval.pgd_steps", "must be >= 0", e.pgd_steps)
    _check(recipe.checkpoint.every_steps >= 0, "checkpoint.every_steps", "must be >= 0", recipe.checkpoint.every_steps)
    _check(recipe.run.log_every >= 1, "run.log_every", "must be >= 1", recipe.run.log_every)
    every = recipe.run.grad_stats_every
    _check(every >= 0, "run.grad_stats_every", "must be >= 0 (0: off)", every)
    dev = recipe.run.device
    _check(dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:"), "run.device", "must be auto/cpu/cuda[:N]", dev)
    if recipe.model_name is not None:
        entry = find_entry(recipe.model_name)
        _check(entry is not None, "model_name", "must be a zoo model name (cure-zoo list)", recipe.model_name)
        method = "cure" if recipe.method == "cure_eff" else recipe.method
        consistent = entry.method == method and entry.dataset == d.dataset and entry.architecture == m.architecture
        _check(
            consistent,
            "model_name",
            f"must match method/dataset/architecture ({recipe.method}, {d.dataset}, {m.architecture})",
            recipe.model_name,
        )


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
