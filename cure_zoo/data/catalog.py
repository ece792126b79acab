"""What the zoo knows about each dataset: classes, splits, and which real images ship with the package."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BundledSubset:
    """A prefix (or set of prefixes) of an official split, stored with exact pixels in ``bundled/``."""

    filename: str
    num_images: int
    sha256: str
    description: str


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    torchvision_class: str
    bundled: dict[str, BundledSubset] = field(default_factory=dict)


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        name="cifar10",
        num_classes=10,
        torchvision_class="CIFAR10",
        bundled={
            "test": BundledSubset(
                "cifar10_test.npz",
                1017,
                "2a079681066fbf63d771259dd79ea9fc76a73b1290ae883cc7af2c1b97662a77",
                "the first 1,017 images of the official CIFAR-10 test split (indices 0-1016)",
            ),
            "train": BundledSubset(
                "cifar10_train.npz",
                5438,
                "950e3ea9169c0c00dc5e896a5176633c9dd6716ca18e2343e5574de60e088fcd",
                "5,438 images of the official CIFAR-10 train split (prefixes of the five training batches)",
            ),
        },
    ),
    "cifar100": DatasetInfo(
        name="cifar100",
        num_classes=100,
        torchvision_class="CIFAR100",
        bundled={
            "test": BundledSubset(
                "cifar100_test.npz",
                916,
                "b80068754e3de2e39469a8893253a2cebd9d15f757d2980e41d69744240cfcff",
                "the first 916 images of the official CIFAR-100 test split (indices 0-915)",
            ),
        },
    ),
    "svhn": DatasetInfo(name="svhn", num_classes=10, torchvision_class="SVHN"),
}


def get_dataset_info(name: str) -> DatasetInfo:
    from ..errors import DatasetError

    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None
