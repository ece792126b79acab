"""Training data: the images held on the training device, the order they are visited in, and augmentation.

The whole training split is kept as one uint8 tensor on the device (CIFAR-10: 150 MB) and batches are cut
from it by index, so there are no loader workers whose random state would have to be checkpointed. Every
random choice of a step (the epoch's shuffle, crop offsets, flips) is a pure function of
``(seed, epoch, step)`` and is drawn for the *global* batch, of which each process takes its slice: a run
resumed mid-epoch, or split over any number of processes, sees exactly the same images.

Augmentation is the paper's (CURE paper, App. F.1: random crop and random flip): ``RandomCrop(32,
padding=4)`` with zero padding and ``RandomHorizontalFlip()``, the same distribution as torchvision's
transforms, computed on the batch. Pixels stay in [0, 1]; there is no normalisation.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import ImageSet, get_dataset_info, load_bundled
from ..data.testsets import torchvision_tensors
from ..errors import DatasetError
from .recipe import DataConfig

PADDING = 4


@dataclass
class TrainSet:
    images: torch.Tensor  # uint8 [N, 3, 32, 32]
    labels: torch.Tensor  # int64 [N]
    dataset: str
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> TrainSet:
        return TrainSet(self.images.to(device), self.labels.to(device), self.dataset, self.source)


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed that is a pure function of ``keys`` (e.g. seed, 'augment', epoch, step)."""
    digest = hashlib.sha256("/".join(str(k) for k in keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(device: torch.device | str, *keys: int | str) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*keys))
    return g


def _torchvision_split(dataset: str, root: str, train: bool, download: bool):
    import torchvision.datasets as tvd

    info = get_dataset_info(dataset)
    cls = getattr(tvd, info.torchvision_class)
    split_kw = {"split": "train" if train else "test"} if dataset == "svhn" else {"train": train}
    try:
        ds = cls(root=root, download=download, **split_kw)
    except (RuntimeError, OSError) as err:
        raise DatasetError(
            f"{info.torchvision_class} ({'train' if train else 'test'}) not found in {root!r} ({err}); put the "
            f"torchvision files there, pass --set data.root=DIR, or --set data.download=true"
        ) from None
    return torchvision_tensors(ds, dataset)


def load_train_set(cfg: DataConfig) -> TrainSet:
    """The training split named by ``cfg`` (optionally its first ``train_examples`` images), uint8 on CPU."""
    if cfg.source == "bundled":
        bundled = load_bundled(cfg.dataset, "train")
        images = (bundled.images * 255).round_().to(torch.uint8)
        labels, source = bundled.labels, bundled.source
    else:
        root = cfg.root or "data"
        images, labels = _torchvision_split(cfg.dataset, root, True, cfg.download)
        source = f"torchvision {get_dataset_info(cfg.dataset).torchvision_class} train split from {Path(root)}"
    if cfg.train_examples is not None:
        if cfg.train_examples > len(labels):
            raise DatasetError(
                f"data.train_examples={cfg.train_examples} but the {cfg.dataset} training set ({source}) has "
                f"{len(labels)} images; lower it"
            )
        images, labels = images[: cfg.train_examples], labels[: cfg.train_examples]
        source += f", first {cfg.train_examples} images"
    return TrainSet(images.contiguous(), labels, cfg.dataset, source)


def load_eval_set(cfg: DataConfig, n: int) -> ImageSet:
    """The fixed held-out set of the per-epoch check: the first ``n`` images of the test split, from the
    torchvision folder when the recipe trains from one and it holds the test split, else the bundled images."""
    info = get_dataset_info(cfg.dataset)
    if cfg.source == "torchvision":
        root = cfg.root or "data"
        try:
            images, labels = _torchvision_split(cfg.dataset, root, False, cfg.download)
        except DatasetError:
            if "test" not in info.bundled:
                raise
        else:
            if n > len(labels):
                raise DatasetError(f"eval.examples={n} but the {cfg.dataset} test split has {len(labels)} images")
            source = f"torchvision {info.torchvision_class} test split from {Path(root)}"
            return ImageSet(
                images[:n].float().div_(255), labels[:n], torch.arange(n), cfg.dataset, "test", source + f", first {n}"
            )
    if "test" not in info.bundled:
        raise DatasetError(f"no test images for {cfg.dataset}: point data.root at the torchvision dataset")
    bundled = load_bundled(cfg.dataset, "test")
    if n > len(bundled):
        raise DatasetError(
            f"eval.examples={n} but only {len(bundled)} bundled {cfg.dataset} test images ship with the package; "
            f"lower eval.examples or point data.root at the torchvision dataset"
        )
    return bundled.take(n)


class BatchPlan:
    """Which images each step of an epoch uses: a seeded shuffle per epoch, cut into global batches, each
    split into contiguous per-process slices."""

    def __init__(self, n: int, batch_size: int, drop_last: bool, seed: int, world_size: int = 1, rank: int = 0):
        if batch_size < world_size:
            raise DatasetError(f"optim.batch_size={batch_size} is smaller than the {world_size} processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.world_size, self.rank = world_size, rank
        steps = n // batch_size if drop_last else math.ceil(n / batch_size)
        # A last batch smaller than the number of processes would leave a process without images: drop it.
        if not drop_last and n % batch_size and n % batch_size < world_size:
            steps -= 1
        if steps < 1:
            raise DatasetError(f"{n} training images make no batch of {batch_size}; lower optim.batch_size")
        self.steps_per_epoch = steps
        self._order: tuple[tuple[int, str], torch.Tensor] | None = None

    def epoch_order(self, epoch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The seeded shuffle of ``epoch`` (0-based), drawn on the CPU and kept on ``device`` for the epoch (one
        copy per epoch, not one ``randperm`` and pageable copy per step)."""
        key = (epoch, str(device))
        if self._order is None or self._order[0] != key:
            order = torch.randperm(self.n, generator=generator("cpu", self.seed, "shuffle", epoch))
            self._order = (key, order.to(device))
        return self._order[1]

    def global_batch(self, epoch: int, step: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Positions (into the training set) of the global batch of ``step`` in ``epoch`` (both 0-based)."""
        return self.epoch_order(epoch, device)[step * self.batch_size : (step + 1) * self.batch_size]

    def local_slice(self, n_global: int) -> slice:
        """This process's contiguous part of a global batch of ``n_global`` images."""
        base, extra = divmod(n_global, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))


def crop_flip(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random 32x32 crop of the zero-padded batch and a random horizontal flip, per image.

    ``g`` lives on ``images.device``; the draws are made for the whole batch in one go, so a process that
    draws for the global batch and keeps its slice gets the same augmentation as a single process.
    """
    b, c, h, w = images.shape
    offsets = torch.randint(0, 2 * PADDING + 1, (b, 2), generator=g, device=images.device)
    flips = torch.rand(b, generator=g, device=images.device) < 0.5
    padded = torch.nn.functional.pad(images, (PADDING,) * 4)
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)  # [B, H]
    cols = offsets[:, 1, None] + torch.arange(w, device=images.device)  # [B, W]
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch_idx = torch.arange(b, device=images.device)[:, None, None, None]
    chan_idx = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]
