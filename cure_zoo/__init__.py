"""cure_zoo: a timm model zoo of adversarially robust classifiers trained with CURE (ICLR 2024).

``import cure_zoo`` registers every zoo model with timm::

    import timm, cure_zoo
    model = timm.create_model('cure_resnet18_cifar10', pretrained=True)
"""

from . import models
from .errors import CureZooError, PretrainedWeightsError, UnknownModelError, WeightsIntegrityError
from .models.zoo import ZOO, ZooEntry
from .version import __version__

__all__ = [
    "ZOO",
    "CureZooError",
    "PretrainedWeightsError",
    "UnknownModelError",
    "WeightsIntegrityError",
    "ZooEntry",
    "__version__",
    "models",
]
