"""Accuracy under natural corruptions: CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich 2019; the paper's
Sec. 7, Fig. 7 and 9, App. D.2).

The data is read from disk in its official layout (it cannot be downloaded at run time): a folder
``CIFAR-10-C/`` (or ``CIFAR-100-C/``) holding ``labels.npy`` and one ``<corruption>.npy`` per corruption,
each ``[50000, 32, 32, 3]`` uint8: the 10,000 test images at severity 1, then severity 2, ... 5, in the
official test order. ``--data-dir`` may be that folder or its parent.

Reported, per corruption and severity, the clean accuracy on the corrupted images (model in eval mode,
inputs in [0, 1]); then per corruption and per group at severity 3 (the paper's Fig. 7 and 9) and averaged
over the five severities (RobustBench's protocol, whose ``corruptions_acc`` is the mean over the 15
standard corruptions and all severities). Groups follow the paper's App. D.2: blur (defocus, glass, motion,
gaussian, zoom), digital (contrast, elastic, jpeg, pixelate), noise (gaussian, impulse, speckle, shot),
weather (brightness, fog, frost, snow). ``spatter`` and ``saturate`` (two of the four extra corruptions)
are in none of the paper's groups and are reported under ``other``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import ImageSet
from ..errors import DatasetError
from ..io import write_json_atomic

SCHEMA = "cure_zoo.corruptions/1"
SEVERITIES = (1, 2, 3, 4, 5)
PAPER_SEVERITY = 3
STANDARD = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
GROUPS = {
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "gaussian_blur", "zoom_blur"),
    "digital": ("contrast", "elastic_transform", "jpeg_compression", "pixelate"),
    "noise": ("gaussian_noise", "impulse_noise", "speckle_noise", "shot_noise"),
    "weather": ("brightness", "fog", "frost", "snow"),
    "other": ("spatter", "saturate"),
}
FOLDERS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}


def find_corruption_dir(dataset: str, data_dir: str | os.PathLike) -> Path:
    """The folder with ``labels.npy`` and the ``<corruption>.npy`` files: ``data_dir`` itself or
    ``data_dir/CIFAR-10-C`` (``CIFAR-100-C``)."""
    if dataset not in FOLDERS:
        raise DatasetError(f"no corruption benchmark for {dataset!r}; use one of {', '.join(FOLDERS)}")
    root = Path(data_dir).expanduser()
    for candidate in (root, root / FOLDERS[dataset]):
        if (candidate / "labels.npy").is_file():
            return candidate
    raise DatasetError(
        f"no {FOLDERS[dataset]} in {root} (looked for labels.npy there and in {root / FOLDERS[dataset]}); download "
        f"{FOLDERS[dataset]} (Hendrycks & Dietterich, zenodo) and pass its folder as --data-dir"
    )


def _load(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read {path} ({what}): {' '.join(str(err).split())[:120]}") from None


def read_corruption(
    directory: Path, corruption: str, severity: int, dataset: str = "cifar10", n: int | None = None
) -> ImageSet:
    """The first ``n`` (default all 10,000) test images of ``corruption`` at ``severity``, as an ImageSet."""
    if severity not in SEVERITIES:
        raise DatasetError(f"severity must be one of 1-5, got {severity}")
    path = directory / f"{corruption}.npy"
    if not path.is_file():
        raise DatasetError(f"{path} is missing; {directory} is not a complete {FOLDERS.get(dataset, dataset)}")
    data, labels = _load(path, corruption), _load(directory / "labels.npy", "labels")
    per = len(labels) // len(SEVERITIES)
    if len(labels) % len(SEVERITIES) or data.shape[0] != len(labels) or data.ndim != 4 or data.shape[3] != 3:
        raise DatasetError(
            f"{path} has shape {tuple(data.shape)} and labels.npy {tuple(labels.shape)}; the official layout is "
            f"[5 x N, 32, 32, 3] uint8 with N images per severity and one label per row"
        )
    count = per if n is None else n
    if count > per:
        raise DatasetError(f"asked for {count} images per severity but {path} has {per}; pass a smaller --n-examples")
    start = (severity - 1) * per
    x = torch.from_numpy(np.ascontiguousarray(data[start : start + count].transpose(0, 3, 1, 2)))
    y = torch.from_numpy(np.asarray(labels[start : start + count]).astype(np.int64))
    source = f"{directory.name} {corruption} severity {severity} ({directory})"
    return ImageSet(x.float().div_(255.0), y, torch.arange(count), dataset, f"{corruption}/{severity}", source)


def group_of(corruption: str) -> str:
    return next((g for g, members in GROUPS.items() if corruption in members), "other")


@dataclass
class CorruptionResult:
    """``accuracy[corruption][severity]`` in percent, with the counts behind it."""

    accuracy: dict[str, dict[int, float]]
    correct: dict[str, dict[int, int]]
    n_per_severity: int
    model: dict[str, Any]
    dataset: dict[str, Any]
    clean_accuracy: float | None = None
    flags: list[str] = field(default_factory=list)

    def at_severity(self, severity: int = PAPER_SEVERITY) -> dict[str, float]:
        return {c: acc[severity] for c, acc in self.accuracy.items() if severity in acc}

    def mean_over_severities(self) -> dict[str, float]:
        return {c: sum(acc.values()) / len(acc) for c, acc in self.accuracy.items() if len(acc) == len(SEVERITIES)}

    def groups(self, per_corruption: dict[str, float]) -> dict[str, float]:
        out: dict[str, list[float]] = {}
        for c, v in per_corruption.items():
            out.setdefault(group_of(c), []).append(v)
        return {g: sum(vs) / len(vs) for g, vs in out.items()}

    def robustbench_accuracy(self) -> float | None:
        """Mean over the 15 standard corruptions and all five severities (RobustBench's corruptions_acc);
        None unless all 15 were run at every severity."""
        means = self.mean_over_severities()
        if not all(c in means for c in STANDARD):
            return None
        return sum(means[c] for c in STANDARD) / len(STANDARD)

    def to_json(self) -> dict[str, Any]:
        sev3 = self.at_severity(PAPER_SEVERITY)
        mean = self.mean_over_severities()
        return {
            "schema": SCHEMA,
            "model": self.model,
            "dataset": self.dataset,
            "n_per_severity": self.n_per_severity,
            "clean_accuracy": self.clean_accuracy,
            "per_corruption": {
                c: {
                    "group": group_of(c),
                    "by_severity": {str(s): a for s, a in acc.items()},
                    "correct": {str(s): k for s, k in self.correct[c].items()},
                }
                for c, acc in self.accuracy.items()
            },  # fmt: skip
            "severity_3": {"per_corruption": sev3, "per_group": self.groups(sev3)},
            "mean_over_severities": {"per_corruption": mean, "per_group": self.groups(mean)},
            "robustbench_corruptions_acc": self.robustbench_accuracy(),
            "flags": self.flags,
        }

    def save(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_json())

    def plot(self, path: str | os.PathLike, severity: int = PAPER_SEVERITY) -> Path:
        """Accuracy per corruption at ``severity``, coloured by group (the paper's Fig. 9)."""
        from .figures import pyplot, save_png

        plt = pyplot()
        values = self.at_severity(severity)
        order = sorted(values, key=lambda c: (list(GROUPS).index(group_of(c)), c))
        colours = dict(zip(GROUPS, ["tab:blue", "tab:purple", "tab:red", "tab:green", "tab:gray"], strict=True))
        fig, ax = plt.subplots(figsize=(1.2 + 0.42 * len(order), 3.8))
        ax.bar(range(len(order)), [values[c] for c in order], color=[colours[group_of(c)] for c in order])
        ax.set_xticks(range(len(order)), [c.replace("_", " ") for c in order], rotation=70, fontsize=7)
        if self.clean_accuracy is not None:
            ax.axhline(self.clean_accuracy, color="black", lw=0.8, ls=":", label=f"clean {self.clean_accuracy:.1f}%")
            ax.legend(fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        name = self.dataset.get("name", "")
        ax.set_title(
            f"{self.model.get('name')}: {name} at severity {severity}, {self.n_per_severity} images", fontsize=8
        )
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        return save_png(fig, path)


def evaluate_corruptions(
    model: Any,
    data_dir: str | os.PathLike,
    *,
    dataset: str = "cifar10",
    corruptions: list[str] | str | None = None,
    severities: tuple[int, ...] = SEVERITIES,
    n_examples: int | None = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    progress: bool = False,
) -> CorruptionResult:
    """Accuracy of ``model`` on the corruption benchmark under ``data_dir`` (see the module docstring).

    ``corruptions``: names, ``"standard"`` (the 15, default), ``"all"`` (the 15 and the 4 extra).
    ``n_examples``: the first N images of every severity (official order)."""
    from ..evaluation import evaluate
    from ..evaluation.engine import _describe_model

    directory = find_corruption_dir(dataset, data_dir)
    net, info = _describe_model(model)  # load once, not once per corruption
    if corruptions is None or corruptions == "standard":
        names = list(STANDARD)
    elif corruptions == "all":
        names = [*STANDARD, *EXTRA]
    else:
        names = [c.strip() for c in (corruptions.split(",") if isinstance(corruptions, str) else corruptions)]
        unknown = [c for c in names if c not in (*STANDARD, *EXTRA)]
        if unknown:
            raise DatasetError(f"unknown corruption {unknown[0]!r}; choose from {', '.join((*STANDARD, *EXTRA))}")
    for s in severities:
        if s not in SEVERITIES:
            raise DatasetError(f"severity must be one of 1-5, got {s}")
    accuracy: dict[str, dict[int, float]] = {}
    correct: dict[str, dict[int, int]] = {}
    flags: list[str] = []
    n_used = 0
    for c in names:
        for s in severities:
            images = read_corruption(directory, c, s, dataset, n_examples)
            result = evaluate(net, images, "nat", batch_size=batch_size, device=device, progress=progress)
            accuracy.setdefault(c, {})[s] = result.accuracy("nat")
            correct.setdefault(c, {})[s] = int(result.results["nat"]["correct"])
            flags += result.flags
            n_used = len(images)
    return CorruptionResult(
        accuracy=accuracy,
        correct=correct,
        n_per_severity=n_used,
        model=info,
        dataset={
            "name": dataset,
            "benchmark": directory.name,
            "source": str(directory),
            "severities": list(severities),
        },
        flags=list(dict.fromkeys(flags)),
    )
