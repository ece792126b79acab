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

from ._builder import build_zoo_model, family_cfgs, register_zoo_entrypoints
from ._layers import CifarClassifier, InputNormalize, conv1x1, conv3x3

__all__ = ["WideResNet", "ZOO_MODELS"]


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(CifarClassifier):
    """WideResNet for 32x32 inputs in [0, 1]; ``depth = 6n + 4``."""

    stage_names = ("block1.layer", "block2.layer", "block3.layer")
    final_norm_names = ("bn1", "act")
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

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.normalize(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = self._forward_stages(x)
        else:
            x = self.block3(self.block2(self.block1(x)))
        return self.act(self.bn1(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.fc(x)


def _create_wide_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> WideResNet:
    kwargs.setdefault("feature_cfg", dict(out_indices=(0, 1, 2, 3)))  # four feature levels, not five
    return build_zoo_model(WideResNet, variant, pretrained, **kwargs)


default_cfgs = generate_default_cfgs(
    family_cfgs(["cifar_wrn28_10", "cifar_wrn34_10", "cifar_wrn70_16"], classifier="fc", pool_size=(8, 8))
)


@register_model
def cifar_wrn28_10(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WideResNet-28-10: 36.48M parameters at 10 classes."""
    model_args = dict(depth=28, widen_factor=10)
    return _create_wide_resnet("cifar_wrn28_10", pretrained, **dict(model_args, **kwargs))


@register_model
def cifar_wrn34_10(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WideResNet-34-10: 46.16M parameters at 10 classes."""
    model_args = dict(depth=34, widen_factor=10)
    return _create_wide_resnet("cifar_wrn34_10", pretrained, **dict(model_args, **kwargs))


@register_model
def cifar_wrn70_16(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WideResNet-70-16: 266.8M parameters at 10 classes."""
    model_args = dict(depth=70, widen_factor=16)
    return _create_wide_resnet("cifar_wrn70_16", pretrained, **dict(model_args, **kwargs))


# The zoo's flat names registered here (see resnet.py's ZOO_MODELS).
ZOO_MODELS = register_zoo_entrypoints(
    __name__,
    {
        cifar_wrn34_10: (
            "cure_wrn34_10_cifar10", "st_wrn34_10_cifar10", "at_wrn34_10_cifar10", "trades_wrn34_10_cifar10",
            "cure_wrn34_10_cifar100", "st_wrn34_10_cifar100", "at_wrn34_10_cifar100", "trades_wrn34_10_cifar100",
        ),
    },
)  # fmt: skip
