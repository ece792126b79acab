"""CIFAR ResNet-18/34/50/101 (He et al., 2016) in the CIFAR form used by CURE and most robustness work.

A 3x3 stride-1 stem without max-pool, four stages of BasicBlock/Bottleneck with projection shortcuts, global
average pooling and a linear classifier. Module names equal those of the CURE authors' models, so their
checkpoints (and AutoAttack's example ResNet-18) load without renaming.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from ._builder import build_zoo_model, family_cfgs, register_zoo_entrypoints
from ._layers import CifarClassifier, InputNormalize, conv1x1, conv3x3

__all__ = ["CifarResNet", "ZOO_MODELS"]


def _projection(in_chs: int, out_chs: int, stride: int) -> nn.Sequential:
    """Shortcut: identity (empty Sequential, no keys) or 1x1 conv + BN where shape changes."""
    if stride == 1 and in_chs == out_chs:
        return nn.Sequential()
    return nn.Sequential(conv1x1(in_chs, out_chs, stride), nn.BatchNorm2d(out_chs))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_chs: int, chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_chs, chs, stride)
        self.bn1 = nn.BatchNorm2d(chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(chs, chs)
        self.bn2 = nn.BatchNorm2d(chs)
        self.shortcut = _projection(in_chs, chs, stride)
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_chs: int, chs: int, stride: int = 1) -> None:
        super().__init__()
        out_chs = chs * self.expansion
        self.conv1 = conv1x1(in_chs, chs)
        self.bn1 = nn.BatchNorm2d(chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(chs, chs, stride)
        self.bn2 = nn.BatchNorm2d(chs)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = conv1x1(chs, out_chs)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.shortcut = _projection(in_chs, out_chs, stride)
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(out + self.shortcut(x))


class CifarResNet(CifarClassifier):
    """ResNet for 32x32 inputs in [0, 1]. Keys: ``conv1``, ``bn1``, ``layer1..4``, ``linear``."""

    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck] = BasicBlock,
        layers: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        in_chans: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        global_pool: str = "avg",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = InputNormalize(mean, std)
        self.conv1 = conv3x3(in_chans, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        self.feature_info = [dict(num_chs=widths[0], reduction=1, module="act1")]
        in_chs = widths[0]
        for i, (chs, depth) in enumerate(zip(widths, layers, strict=True)):
            stride = 1 if i == 0 else 2
            blocks = []
            for b in range(depth):
                blocks.append(block(in_chs, chs, stride if b == 0 else 1))
                in_chs = chs * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=in_chs, reduction=2**i, module=f"layer{i + 1}"))
        self._init_head(in_chs, num_classes, global_pool)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^conv1|bn1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv1(self.normalize(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self._forward_stages(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _create_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return build_zoo_model(CifarResNet, variant, pretrained, **kwargs)


default_cfgs = generate_default_cfgs(
    family_cfgs(
        ["cifar_resnet18", "cifar_resnet18_w16", "cifar_resnet34", "cifar_resnet50", "cifar_resnet101"],
        classifier="linear",
    )
)


@register_model
def cifar_resnet18(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-18: 11.17M parameters at 10 classes."""
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2))
    return _create_resnet("cifar_resnet18", pretrained, **dict(model_args, **kwargs))


@register_model
def cifar_resnet18_w16(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-18 at quarter width (16/32/64/128): 0.70M parameters at 10 classes. The CIFAR-10-5k
    track's model."""
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2), widths=(16, 32, 64, 128))
    return _create_resnet("cifar_resnet18_w16", pretrained, **dict(model_args, **kwargs))


@register_model
def cifar_resnet34(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-34: 21.28M parameters at 10 classes."""
    model_args = dict(block=BasicBlock, layers=(3, 4, 6, 3))
    return _create_resnet("cifar_resnet34", pretrained, **dict(model_args, **kwargs))


@register_model
def cifar_resnet50(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-50: 23.52M parameters at 10 classes."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3))
    return _create_resnet("cifar_resnet50", pretrained, **dict(model_args, **kwargs))


@register_model
def cifar_resnet101(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-101: 42.51M parameters at 10 classes."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 23, 3))
    return _create_resnet("cifar_resnet101", pretrained, **dict(model_args, **kwargs))


# The zoo's flat names (rows of zoo.py's table) registered here: each is its architecture above with that
# model's pretrained cfg. Listed so that a name can be found by searching for it; tests/test_models.py
# checks the list against the table.
ZOO_MODELS = register_zoo_entrypoints(
    __name__,
    {
        cifar_resnet18: (
            "cure_resnet18_cifar10", "st_resnet18_cifar10", "at_resnet18_cifar10", "trades_resnet18_cifar10",
            "cure_resnet18_cifar100", "st_resnet18_cifar100", "at_resnet18_cifar100", "trades_resnet18_cifar100",
            "cure_resnet18_svhn", "st_resnet18_svhn", "at_resnet18_svhn", "trades_resnet18_svhn",
        ),
        cifar_resnet18_w16: (
            "cure_resnet18_w16_cifar10_5k", "st_resnet18_w16_cifar10_5k", "at_resnet18_w16_cifar10_5k",
            "trades_resnet18_w16_cifar10_5k",
        ),
        cifar_resnet50: (
            "cure_resnet50_cifar10", "st_resnet50_cifar10", "at_resnet50_cifar10", "trades_resnet50_cifar10",
        ),
        cifar_resnet101: (
            "cure_resnet101_cifar10", "st_resnet101_cifar10", "at_resnet101_cifar10", "trades_resnet101_cifar10",
        ),
    },
)  # fmt: skip
