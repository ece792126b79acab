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
from timm.models._manipulate import checkpoint_seq

from ._builder import build_zoo_model, family_cfgs, register_zoo_names
from ._layers import InputNormalize, PooledLinearHead, conv1x1, conv3x3

__all__ = ["CifarResNet"]


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


class CifarResNet(PooledLinearHead, nn.Module):
    """ResNet for 32x32 inputs in [0, 1]. Keys: ``conv1``, ``bn1``, ``layer1..4``, ``linear``."""

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
        self.grad_checkpointing = False
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

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(self.normalize(x))))
        stages = [self.layer1, self.layer2, self.layer3, self.layer4]
        for stage in stages:
            x = checkpoint_seq(stage, x) if self.grad_checkpointing and self.training else stage(x)
        return x


_ARCH_ARGS = {
    "resnet18": dict(block=BasicBlock, layers=(2, 2, 2, 2)),
    # The CIFAR-10-5k track's model: ResNet-18's topology at a quarter of its widths (0.70M parameters).
    "resnet18_w16": dict(block=BasicBlock, layers=(2, 2, 2, 2), widths=(16, 32, 64, 128)),
    "resnet34": dict(block=BasicBlock, layers=(3, 4, 6, 3)),
    "resnet50": dict(block=Bottleneck, layers=(3, 4, 6, 3)),
    "resnet101": dict(block=Bottleneck, layers=(3, 4, 23, 3)),
}


def _create(arch: str) -> Any:
    def create(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
        return build_zoo_model(CifarResNet, variant, pretrained, **dict(_ARCH_ARGS[arch], **kwargs))

    return create


default_cfgs = generate_default_cfgs(family_cfgs({arch: dict(classifier="linear") for arch in _ARCH_ARGS}))


@register_model
def cifar_resnet18(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-18: 11.17M parameters at 10 classes."""
    return _create("resnet18")("cifar_resnet18", pretrained, **kwargs)


@register_model
def cifar_resnet18_w16(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-18 at quarter width (16/32/64/128): 0.70M parameters at 10 classes."""
    return _create("resnet18_w16")("cifar_resnet18_w16", pretrained, **kwargs)


@register_model
def cifar_resnet34(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _create("resnet34")("cifar_resnet34", pretrained, **kwargs)


@register_model
def cifar_resnet50(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _create("resnet50")("cifar_resnet50", pretrained, **kwargs)


@register_model
def cifar_resnet101(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _create("resnet101")("cifar_resnet101", pretrained, **kwargs)


register_zoo_names(__name__, {arch: _create(arch) for arch in _ARCH_ARGS})
