"""WideResNet-depth-width (Zagoruyko & Komodakis, 2016) in the pre-activation form of TRADES/CURE.

WRN-34-10 is the paper's large model; WRN-28-10 and WRN-70-16 are the other common robustness backbones.
Module names equal the authors' (``conv1``, ``block1.layer.0.bn1``, ``convShortcut``, final ``bn1``, ``fc``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model
from timm.models._manipulate import checkpoint_seq

from ._builder import build_zoo_model, family_cfgs, register_zoo_names
from ._layers import InputNormalize, PooledLinearHead, conv1x1, conv3x3

__all__ = ["WideResNet"]


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv x2. Where the shape changes, the 1x1 shortcut sees the pre-activated input."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(in_chs, out_chs, stride)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = conv3x3(out_chs, out_chs)
        self.convShortcut = None if in_chs == out_chs else conv1x1(in_chs, out_chs, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(pre)
        out = self.act2(self.bn2(self.conv1(pre)))
        out = self.conv2(self.drop(out))
        return shortcut + out


class NetworkBlock(nn.Module):
    """One group of blocks; kept as a module of its own so keys read ``blockN.layer.i``."""

    def __init__(self, depth: int, in_chs: int, out_chs: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(in_chs if i == 0 else out_chs, out_chs, stride if i == 0 else 1, drop_rate)
                for i in range(depth)
            ]
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training:
            return checkpoint_seq(self.layer, x)
        return self.layer(x)


class WideResNet(PooledLinearHead, nn.Module):
    """WideResNet for 32x32 inputs in [0, 1]; ``depth = 6n + 4``."""

    classifier_attr = "fc"

    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 (e.g. 28, 34, 70), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.normalize = InputNormalize(mean, std)
        self.conv1 = conv3x3(in_chans, widths[0])
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.act = nn.ReLU(inplace=True)
        self.feature_info = [
            dict(num_chs=widths[0], reduction=1, module="conv1"),
            dict(num_chs=widths[1], reduction=1, module="block1"),
            dict(num_chs=widths[2], reduction=2, module="block2"),
            dict(num_chs=widths[3], reduction=4, module="act"),
        ]
        self._init_head(widths[3], num_classes, global_pool)
        self._init_weights()

    def _init_weights(self) -> None:
        # The TRADES/CURE initialisation: He-normal convs (fan-out), BN 1/0, zero classifier bias.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^conv1",
            blocks=r"^block(\d+)" if coarse else r"^block(\d+)\.layer\.(\d+)",
            head_norm=r"^bn1",
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for group in (self.block1, self.block2, self.block3):
            group.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.normalize(x))
        x = self.block3(self.block2(self.block1(x)))
        return self.act(self.bn1(x))


_ARCH_ARGS = {
    "wrn28_10": dict(depth=28, widen_factor=10),
    "wrn34_10": dict(depth=34, widen_factor=10),
    "wrn70_16": dict(depth=70, widen_factor=16),
}


def _create(arch: str) -> Any:
    def create(variant: str, pretrained: bool = False, **kwargs: Any) -> WideResNet:
        kwargs.setdefault("feature_cfg", dict(out_indices=(0, 1, 2, 3)))  # four feature levels, not five
        return build_zoo_model(WideResNet, variant, pretrained, **dict(_ARCH_ARGS[arch], **kwargs))

    return create


default_cfgs = generate_default_cfgs(
    family_cfgs({arch: dict(classifier="fc", pool_size=(8, 8)) for arch in _ARCH_ARGS})
)


@register_model
def cifar_wrn28_10(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    return _create("wrn28_10")("cifar_wrn28_10", pretrained, **kwargs)


@register_model
def cifar_wrn34_10(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WideResNet-34-10: 46.16M parameters at 10 classes."""
    return _create("wrn34_10")("cifar_wrn34_10", pretrained, **kwargs)


@register_model
def cifar_wrn70_16(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    return _create("wrn70_16")("cifar_wrn70_16", pretrained, **kwargs)


register_zoo_names(__name__, {arch: _create(arch) for arch in _ARCH_ARGS})
