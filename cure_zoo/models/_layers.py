"""Layers shared by the model families."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from timm.layers import SelectAdaptivePool2d


class InputNormalize(nn.Module):
    """``(x - mean) / std`` inside the model, so the model always takes [0, 1] images.

    The buffers are non-persistent: they are not in the state dict, so checkpoints stay in the authors'
    layout. With ``mean=None`` (the paper's setting: no normalisation) this is the identity.
    """

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.enabled = mean is not None or std is not None
        mean = torch.tensor(mean if mean is not None else (0.0, 0.0, 0.0)).view(1, -1, 1, 1)
        std = torch.tensor(std if std is not None else (1.0, 1.0, 1.0)).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        if not self.enabled:
            return "identity"
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False)


class PooledLinearHead:
    """The head every family shares: global pooling, then a linear classifier.

    The classifier keeps the authors' attribute name (``linear`` or ``fc``, given by ``classifier_attr``) so
    their checkpoints load unchanged. Classes using this set ``num_features``, ``num_classes``,
    ``global_pool`` and the classifier in ``__init__`` (see :meth:`_init_head`).
    """

    classifier_attr = "linear"
    num_features: int
    num_classes: int
    global_pool: nn.Module

    def _init_head(self, num_features: int, num_classes: int, global_pool: str) -> None:
        self.num_features = self.head_hidden_size = num_features
        self.reset_classifier(num_classes, global_pool)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_attr)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        setattr(self, self.classifier_attr, classifier)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
