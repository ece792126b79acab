"""The real CIFAR images that ship inside the package (exact pixels, official order); see bundled/README.md."""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources

import numpy as np
import torch

from ..errors import DatasetError
from .catalog import get_dataset_info


@dataclass
class ImageSet:
    """Images as float32 NCHW tensors in [0, 1], with labels and their indices in the official split."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    dataset: str
    split: str
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, n: int) -> ImageSet:
        """The first ``n`` images (official order)."""
        if n > len(self):
            raise DatasetError(
                f"asked for {n} {self.dataset} {self.split} images but {self.source} has only {len(self)}; "
                f"pass a smaller number or point --data-dir at the full dataset"
            )
        return self.slice(0, n)

    def slice(self, start: int, stop: int) -> ImageSet:
        """Images ``start`` to ``stop - 1`` of this set (a shard or a chunk), with their official indices."""
        return replace(
            self, images=self.images[start:stop], labels=self.labels[start:stop], indices=self.indices[start:stop]
        )


def bundled_path(dataset: str, split: str = "test"):
    """Path (a Traversable) of a bundled archive; error if the dataset/split has no bundled images."""
    info = get_dataset_info(dataset)
    if split not in info.bundled:
        have = ", ".join(f"{d}/{s}" for d, i in _all_bundled() for s in i)
        raise DatasetError(
            f"no bundled images for {dataset} {split}; the package ships {have}. "
            f"Download the dataset with torchvision and pass --data-dir"
        )
    return resources.files(__package__) / "bundled" / info.bundled[split].filename


def _all_bundled():
    from .catalog import DATASETS

    return [(name, info.bundled) for name, info in DATASETS.items() if info.bundled]


def load_bundled(dataset: str, split: str = "test", n: int | None = None) -> ImageSet:
    """Load the bundled real images of ``dataset``/``split`` (optionally only the first ``n``)."""
    path = bundled_path(dataset, split)
    with path.open("rb") as f, np.load(f, allow_pickle=False) as npz:
        x, y, idx = npz["x"], npz["y"], npz["idx"]
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float().div_(255.0)
    info = get_dataset_info(dataset)
    source = f"bundled real {dataset} {split} subset ({info.bundled[split].description})"
    out = ImageSet(images, torch.from_numpy(y).long(), torch.from_numpy(idx).long(), dataset, split, source)
    return out if n is None else out.take(n)
