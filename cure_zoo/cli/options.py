"""The command-line options that several subcommands share, each defined once (name, type, default, help)."""

from __future__ import annotations

import argparse

DEVICE_HELP = "auto (default), cpu, cuda or cuda:N"
DATASET_HELP = "cifar10 (default), cifar100 or svhn"


def positive_int(text: str) -> int:
    """argparse ``type`` for counts (images, batch sizes, chunks): a bad value is a usage error (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def add_test_data(p: argparse.ArgumentParser, *, download: bool = True) -> None:
    """``--data-dir`` (and ``--no-download``): where the torchvision test set is, or is downloaded to."""
    p.add_argument(
        "--data-dir", default=None, help="folder with (or for) the torchvision dataset; default $CURE_ZOO_DATA"
    )
    if download:
        p.add_argument("--no-download", action="store_true", help="never download the dataset")


def add_allow_tf32(p: argparse.ArgumentParser, *, why: str = "recorded in the protocol") -> None:
    p.add_argument(
        "--allow-tf32",
        action="store_true",
        help=f"let CUDA convolutions and matmuls use TF32 (default: off, full float32, {why})",
    )


def add_no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
