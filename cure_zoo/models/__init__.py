"""Model families; importing this package registers every zoo model with timm."""

from . import preact_resnet, resnet, wide_resnet
from .zoo import ZOO, ZooEntry, find_entry, zoo_entries

__all__ = ["ZOO", "ZooEntry", "find_entry", "preact_resnet", "resnet", "wide_resnet", "zoo_entries"]
