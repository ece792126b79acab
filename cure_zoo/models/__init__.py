"""Model families; importing this package registers every zoo model with timm."""

from . import preact_resnet, resnet, wide_resnet
from ._builder import param_count
from .zoo import ZOO, ZooEntry, find_entry, zoo_entries

__all__ = ["ZOO", "ZooEntry", "find_entry", "param_count", "preact_resnet", "resnet", "wide_resnet", "zoo_entries"]
