"""Datasets: the bundled real CIFAR subsets and dataset metadata."""

from .bundled import ImageSet, load_bundled
from .catalog import DATASETS, DatasetInfo, get_dataset_info

__all__ = ["DATASETS", "DatasetInfo", "ImageSet", "get_dataset_info", "load_bundled"]
