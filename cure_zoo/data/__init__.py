"""Datasets: the bundled real CIFAR subsets, dataset metadata, and test splits for evaluation."""

from .bundled import ImageSet, load_bundled
from .catalog import DATASETS, DatasetInfo, get_dataset_info
from .testsets import load_testset

__all__ = ["DATASETS", "DatasetInfo", "ImageSet", "get_dataset_info", "load_bundled", "load_testset"]
