# Runs timm's own tests/test_models.py on cure_zoo's names only (measurement harness, not shipped).
import timm
import torch
from timm.models import _registry

import cure_zoo  # noqa: F401

torch.set_num_threads(1)
OURS = {n for n, fn in _registry._model_entrypoints.items() if fn.__module__.startswith("cure_zoo")}
OUR_MODULES = ["resnet", "preact_resnet", "wide_resnet"]
_list_models = timm.list_models


def list_models(filter="", module="", *args, **kwargs):
    if isinstance(module, (list, tuple)) and module:
        module = [*module, *OUR_MODULES]
    return [n for n in _list_models(filter, module, *args, **kwargs) if n.split(".")[0] in OURS]


def list_pretrained(filter="", exclude_filters=""):
    return list_models(filter, pretrained=True, exclude_filters=exclude_filters, include_tags=True)


timm.list_models = list_models
timm.list_pretrained = list_pretrained
