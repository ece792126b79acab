"""The zoo's table: every registered model, what it is, and where its weights come from.

A zoo model is a (training method, architecture, dataset) triple, e.g. ``cure_resnet18_cifar10``.
Each is registered with timm twice, from this one table:

* as a flat name, ``cure_resnet18_cifar10`` (what the paper's tables call the model), and
* as timm's ``architecture.tag``, ``cifar_resnet18.cure_cifar10``.

A weight *variant* from another source adds a tag to the flat name: ``st_resnet18_cifar10.autoattack``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ..data.catalog import get_dataset_info

HF_ORG_ENV = "CURE_ZOO_HF_ORG"
DEFAULT_HF_ORG = "cure-zoo"

# training method -> what it is: the one list of methods (the zoo's names, the recipes' ``method``, the cards)
METHODS = {
    "cure": "CURE (Conserve-Update-Revise; Gowda et al., ICLR 2024)",
    "st": "standard (natural) training",
    "at": "PGD adversarial training (Madry et al., ICLR 2018)",
    "trades": "TRADES (Zhang et al., ICML 2019)",
    "cure_eff": "CURE-Eff (natural warm-up, then CURE, in one budget; paper App. B)",
}
MethodName = Literal[tuple(METHODS)]  # a recipe's ``method``
# the methods that run the CURE step (a recipe's ``cure`` section applies to them)
CURE_METHODS = ("cure", "cure_eff")
# the methods registered for every paper pair; CURE-Eff is a recipe (paper App. B), not a zoo model
RECIPE_ONLY_METHODS = ("cure_eff",)
ZOO_METHODS = tuple(m for m in METHODS if m not in RECIPE_ONLY_METHODS)

# short architecture name -> (timm architecture entrypoint, human name)
ARCHITECTURES = {
    "resnet18": ("cifar_resnet18", "ResNet-18"),
    "resnet18_w16": ("cifar_resnet18_w16", "ResNet-18 at quarter width (16/32/64/128)"),
    "resnet34": ("cifar_resnet34", "ResNet-34"),
    "resnet50": ("cifar_resnet50", "ResNet-50"),
    "resnet101": ("cifar_resnet101", "ResNet-101"),
    "preactresnet18": ("cifar_preactresnet18", "PreActResNet-18"),
    "wrn28_10": ("cifar_wrn28_10", "WideResNet-28-10"),
    "wrn34_10": ("cifar_wrn34_10", "WideResNet-34-10"),
    "wrn70_16": ("cifar_wrn70_16", "WideResNet-70-16"),
}

# (architecture, dataset) pairs the paper reports; every method is registered for each.
PAPER_PAIRS = [
    ("resnet18", "cifar10"),
    ("resnet18", "cifar100"),
    ("resnet18", "svhn"),
    ("wrn34_10", "cifar10"),
    ("wrn34_10", "cifar100"),
    ("preactresnet18", "cifar10"),
    ("resnet50", "cifar10"),
    ("resnet101", "cifar10"),
]


@dataclass(frozen=True)
class ZooEntry:
    method: str
    arch: str
    dataset: str
    tag: str = ""
    # Weights: 'hub' (model.safetensors in the Hub repo), 'pyautoattack' (the file inside that wheel) or
    # 'package' (a run directory shipped inside this package, under cure_zoo/models/bundled/<name>/).
    weights_source: str = "hub"
    # Hub commit the zoo vouches for once weights are published; None until then (see published.json).
    revision: str | None = None
    # Measured claims of the published weights (metric -> percent), from published.json.
    claims: dict[str, Any] = field(default_factory=dict, compare=False)
    # A reduced training set, part of the name: '5k' is the 5,438 real CIFAR-10 images bundled in the package.
    train_subset: str = ""
    license: str = "apache-2.0"
    origin_url: str = "https://arxiv.org/abs/2401.14948"
    description: str = ""

    @property
    def model_name(self) -> str:
        """The registered timm entrypoint (flat name without tag)."""
        return f"{self.method}_{self.arch}_{self.dataset}" + (f"_{self.train_subset}" if self.train_subset else "")

    @property
    def name(self) -> str:
        """The full name to pass to ``timm.create_model``."""
        return f"{self.model_name}.{self.tag}" if self.tag else self.model_name

    @property
    def architecture(self) -> str:
        return ARCHITECTURES[self.arch][0]

    @property
    def arch_tag(self) -> str:
        """The tag under the architecture entrypoint: ``cifar_resnet18.<arch_tag>``."""
        subset = f"_{self.train_subset}" if self.train_subset else ""
        return f"{self.method}_{self.dataset}{subset}" + (f"_{self.tag}" if self.tag else "")

    @property
    def num_classes(self) -> int:
        return get_dataset_info(self.dataset).num_classes

    @property
    def repo_id(self) -> str | None:
        if self.weights_source != "hub":
            return None
        return f"{os.environ.get(HF_ORG_ENV, DEFAULT_HF_ORG)}/{self.model_name}"

    @property
    def hf_hub_id(self) -> str | None:
        """Repo id with the pinned revision, in timm's ``org/name@revision`` form."""
        if self.repo_id is None:
            return None
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id

    @property
    def published(self) -> bool:
        """Whether the zoo vouches for weights: shipped in a dependency, pinned to a Hub revision, or shipped in
        this package with their sha256 pinned in published.json."""
        if self.weights_source == "package":
            return self.weights_sha256 is not None
        return self.weights_source != "hub" or self.revision is not None

    @property
    def weights_sha256(self) -> str | None:
        """The pinned sha256 of weights shipped in this package (published.json), else None."""
        return _PUBLISHED.get(self.name, {}).get("sha256") if self.weights_source == "package" else None

    @property
    def bundled_dir(self) -> Path:
        """Where a 'package' entry's run directory (model.safetensors, config.json, card) lives."""
        return BUNDLED_DIR / self.name


BUNDLED_DIR = Path(str(resources.files(__package__) / "bundled"))


def _published() -> dict[str, dict[str, Any]]:
    """published.json: for each model whose weights the zoo publishes, its pinned Hub revision (or, for
    weights shipped in the package, their sha256) and its measured claims."""
    return json.loads((resources.files(__package__) / "published.json").read_text())


_PUBLISHED = _published()


def _hub_entry(method: str, arch: str, dataset: str) -> ZooEntry:
    record = _PUBLISHED.get(f"{method}_{arch}_{dataset}", {})
    return ZooEntry(method, arch, dataset, revision=record.get("revision"), claims=record.get("claims", {}))


ZOO: list[ZooEntry] = [_hub_entry(method, arch, dataset) for arch, dataset in PAPER_PAIRS for method in ZOO_METHODS]
ZOO.append(
    ZooEntry(
        "st",
        "resnet18",
        "cifar10",
        tag="autoattack",
        weights_source="pyautoattack",
        license="mit",
        origin_url="https://github.com/fra31/auto-attack",
        description="naturally trained CIFAR-10 ResNet-18 shipped with AutoAttack "
        "(pyautoattack/examples/model_test.pt)",
    )
)


# The CIFAR-10-5k track: quarter-width ResNet-18s trained by this project on the 5,438 bundled real CIFAR-10
# training images, all methods at the same epoch budget. Small-scale models, not the paper's.
SMALL_SCALE_NOTE = "trained on 5,438 images at quarter width — not the paper's models"
CIFAR10_5K = [
    ("st", "", "natural training, the starting point of the from_st models"),
    ("at", "", "PGD-AT from scratch"),
    ("trades", "", "TRADES (beta 6) from scratch"),
    ("trades", "from_st", "TRADES (beta 6) from the st model's weights (the paper's Table 5 setting)"),
    ("cure", "", "CURE, paper preset, from the st model's weights"),
    ("cure", "official", "CURE, the authors' code preset, from the st model's weights"),
]


def _package_entry(method: str, tag: str, what: str) -> ZooEntry:
    entry = ZooEntry(
        method,
        "resnet18_w16",
        "cifar10",
        tag=tag,
        train_subset="5k",
        weights_source="package",
        description=f"{what}; {SMALL_SCALE_NOTE}",
    )
    return replace(entry, claims=_PUBLISHED.get(entry.name, {}).get("claims", {}))


ZOO.extend(_package_entry(*row) for row in CIFAR10_5K)

_BY_NAME = {e.name: e for e in ZOO}
_BY_ARCH_TAG = {f"{e.architecture}.{e.arch_tag}": e for e in ZOO}


def zoo_entries(arch: str | None = None) -> list[ZooEntry]:
    """All zoo entries, or those of one short architecture name."""
    return [e for e in ZOO if arch is None or e.arch == arch]


def find_entry(name: str) -> ZooEntry | None:
    """The entry for a flat name (``cure_resnet18_cifar10``) or ``architecture.tag`` name, if any."""
    return _BY_NAME.get(name) or _BY_ARCH_TAG.get(name)
