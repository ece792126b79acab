"""Model families; importing this package registers every zoo model with timm."""

from . import preact_resnet, resnet, wide_resnet
from ._builder import param_count
from ._hub import cache_dir, download_file, hub_config
from .zoo import ZOO, ZooEntry, find_entry, zoo_entries

__all__ = [
    "ZOO",
    "ZooEntry",
    "cache_dir",
    "download_file",
    "find_entry",
    "hub_config",
    "param_count",
    "preact_resnet",
    "resnet",
    "wide_resnet",
    "zoo_entries",
]
