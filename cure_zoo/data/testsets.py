"""Test splits for evaluation: the full torchvision datasets when they are on disk (or can be downloaded),
else the bundled real subsets, said out loud.

Resolution for ``load_testset(dataset, data_dir=D)``:

1. ``D`` (or ``$CURE_ZOO_DATA``) holds the dataset in torchvision's layout -> the full official test split.
2. It does not, and downloading is allowed (``download="auto"`` and not offline, or ``download=True``) ->
   torchvision downloads it into ``D``. ``"auto"`` treats ``CURE_ZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` as
   "no network" and tries nothing.
3. Otherwise (no ``D``, or no network) -> the bundled real images (CIFAR-10: test 0-1016, CIFAR-100: test
   0-915) with ONE notice naming them. SVHN has no bundled subset: a :class:`DatasetError` says what to do.

Images come back in official order as float32 [0, 1] tensors; ``n`` takes the first ``n``.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..distributed import rank_zero_first
from ..errors import DatasetError
from .bundled import ImageSet, load_bundled
from .catalog import get_dataset_info

DATA_ENV = "CURE_ZOO_DATA"
_DOWNLOAD_TIMEOUT_S = 30


def _offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("CURE_ZOO_OFFLINE", "HF_HUB_OFFLINE")
    )


def _print_notice(message: str) -> None:
    print(f"notice: {message}", file=sys.stderr)


def _torchvision_class(dataset: str):
    import torchvision.datasets as tvd

    return getattr(tvd, get_dataset_info(dataset).torchvision_class)


def _torchvision_testset(dataset: str, root: Path, download: bool):
    """The torchvision test split of ``dataset`` under ``root``; RuntimeError if absent (and not downloaded)."""
    cls = _torchvision_class(dataset)
    if dataset == "svhn":
        return cls(str(root), split="test", download=download)
    return cls(str(root), train=False, download=download)


def torchvision_tensors(ds, dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision CIFAR/SVHN dataset's images as one uint8 N x 3 x 32 x 32 tensor, and its int64 labels."""
    if dataset == "svhn":  # torchvision keeps SVHN as N x 3 x 32 x 32 uint8 with labels 0-9
        images, labels = torch.from_numpy(np.ascontiguousarray(ds.data)), ds.labels
    else:  # CIFAR: N x 32 x 32 x 3 uint8
        images, labels = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))), ds.targets
    return images, torch.as_tensor(np.asarray(labels), dtype=torch.int64)


def _to_imageset(ds, dataset: str, root: Path) -> ImageSet:
    images, labels = torchvision_tensors(ds, dataset)
    n = len(labels)
    source = f"torchvision {type(ds).__name__} test split in {root} (all {n:,} images)"
    return ImageSet(images.float().div_(255.0), labels, torch.arange(n), dataset, "test", source)


def load_testset(
    dataset: str,
    *,
    data_dir: str | os.PathLike | None = None,
    n: int | None = None,
    download: bool | str = "auto",
    notify: Callable[[str], None] | None = _print_notice,
) -> ImageSet:
    """The official test split of ``dataset`` (first ``n`` images), or the bundled subset with a notice."""
    info = get_dataset_info(dataset)  # unknown names -> DatasetError listing the valid ones
    if n is not None and n <= 0:
        raise DatasetError(f"--n-examples must be positive, got {n}")
    root = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    reason = "no --data-dir given"
    if root is not None:
        root = Path(root).expanduser()
        # under torchrun rank 0 looks (and downloads) first, the others then find its files: one writer
        found = rank_zero_first(lambda: _torchvision_or_reason(dataset, root, download))
        if isinstance(found, ImageSet):
            return _select(found, n)
        reason = found
    if "test" not in info.bundled:
        raise DatasetError(
            f"{reason}, and no {dataset} images ship with the package; download the {info.torchvision_class} "
            f"test split with torchvision (torchvision.datasets.{info.torchvision_class}(D, split='test', "
            f"download=True) on a machine with a network) and pass --data-dir D"
        )
    images = load_bundled(dataset, "test")
    images = _select(images, n)
    if notify is not None:
        notify(
            f"{reason}; evaluating on the {images.source}, using {len(images)} of them "
            f"(test indices {int(images.indices[0])}-{int(images.indices[-1])}). Pass --data-dir with the "
            f"torchvision dataset for the full test split."
        )
    return images


def _torchvision_or_reason(dataset: str, root: Path, download: bool | str) -> ImageSet | str:
    """The torchvision test split under ``root`` (downloaded there if allowed), or why there is none."""
    info = get_dataset_info(dataset)
    try:
        return _to_imageset(_torchvision_testset(dataset, root, download=False), dataset, root)
    except RuntimeError:
        reason = f"no {info.torchvision_class} test split in {root}"
    want_download = (not _offline()) if download == "auto" else bool(download)
    if not want_download:
        return reason + " and downloading is off" + (" (offline)" if download == "auto" else "")
    try:
        return _to_imageset(_download(dataset, root), dataset, root)
    # URLError and timeouts are OSErrors, a reply that is not HTTP an HTTPException; torchvision raises
    # RuntimeError for a download that fails its md5
    except (OSError, RuntimeError, http.client.HTTPException) as err:
        first_line = str(err).partition("\n")[0][:120]  # "" for an exception without a message
        return reason + f" and the download failed ({type(err).__name__}: {first_line})"


def _download(dataset: str, root: Path):
    root.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)  # no network should fail fast, not hang
    try:
        return _torchvision_testset(dataset, root, download=True)
    except BaseException:
        _remove_failed_download(dataset, root)
        raise
    finally:
        socket.setdefaulttimeout(previous)


def _remove_failed_download(dataset: str, root: Path) -> None:
    """Delete the file torchvision was downloading if it is truncated or corrupted (it leaves it where it wrote
    it); an archive that passes its md5 is kept."""
    from torchvision.datasets.utils import check_integrity

    cls = _torchvision_class(dataset)
    filename, md5 = cls.split_list["test"][1:] if dataset == "svhn" else (cls.filename, cls.tgz_md5)
    path = root / filename
    if path.is_file() and not check_integrity(path, md5):
        path.unlink()


def _select(images: ImageSet, n: int | None) -> ImageSet:
    return images if n is None else images.take(n)
