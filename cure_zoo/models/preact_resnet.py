"""CIFAR PreActResNet-18 (He et al., 2016b), the backbone of the paper's robust-overfitting study.

Module names equal the authors' (``conv1``, ``layerN.i.bn1``, ``shortcut.0``, final ``bn``, ``linear``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from ._builder import build_zoo_model, family_cfgs, register_zoo_entrypoints
from ._layers import CifarClassifier, InputNormalize, conv1x1, conv3x3

__all__ = ["PreActResNet", "ZOO_MODELS"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv x2; a projection shortcut (1x1 conv, no BN) sees the pre-activated input."""

    def __init__(self, in_chs: int, chs: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(in_chs, chs, stride)
        self.bn2 = nn.BatchNorm2d(chs)
        self.act2 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(chs, chs)
        needs_projection = stride != 1 or in_chs != chs
        self.shortcut = nn.Sequential(conv1x1(in_chs, chs, stride)) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.act2(self.bn2(out)))
        return out + shortcut


class PreActResNet(CifarClassifier):
    """PreActResNet for 32x32 inputs in [0, 1]."""

    stage_names = ("layer1", "layer2", "layer3", "layer4")
    final_norm_names = ("bn", "act")

    def __init__(
        self,
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
        self.feature_info = [dict(num_chs=widths[0], reduction=1, module="conv1")]
        in_chs = widths[0]
        for i, (chs, depth) in enumerate(zip(widths, layers, strict=True)):
            stride = 1 if i == 0 else 2
            blocks = [PreActBlock(in_chs if b == 0 else chs, chs, stride if b == 0 else 1) for b in range(depth)]
            in_chs = chs
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            if i < len(widths) - 1:
                self.feature_info.append(dict(num_chs=chs, reduction=2**i, module=f"layer{i + 1}"))
        self.bn = nn.BatchNorm2d(in_chs)
        self.act = nn.ReLU(inplace=True)
        self.feature_info.append(dict(num_chs=in_chs, reduction=2 ** (len(widths) - 1), module="act"))
        self._init_head(in_chs, num_classes, global_pool)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^conv1", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)", head_norm=r"^bn")

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.normalize(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = self._forward_stages(x)
        else:
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.act(self.bn(x))


def _create_preact_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    return build_zoo_model(PreActResNet, variant, pretrained, **kwargs)


default_cfgs = generate_default_cfgs(family_cfgs(["cifar_preactresnet18"], classifier="linear"))


@register_model
def cifar_preactresnet18(pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    """CIFAR PreActResNet-18: 11.17M parameters at 10 classes."""
    model_args = dict(layers=(2, 2, 2, 2))
    return _create_preact_resnet("cifar_preactresnet18", pretrained, **dict(model_args, **kwargs))


# The zoo's flat names registered here (see resnet.py's ZOO_MODELS).
ZOO_MODELS = register_zoo_entrypoints(
    __name__,
    {
        cifar_preactresnet18: (
            "cure_preactresnet18_cifar10", "st_preactresnet18_cifar10", "at_preactresnet18_cifar10",
            "trades_preactresnet18_cifar10",
        ),
    },
)  # fmt: skip
