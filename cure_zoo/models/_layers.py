"""Layers and the model base shared by the model families.

No ``from __future__ import annotations`` in this module: ``forward`` must carry real annotation objects, which
torch.fx copies into the code it generates (string annotations there break TorchScript on a traced model)."""

from collections.abc import Sequence

import torch
import torch.nn as nn
from timm.layers import SelectAdaptivePool2d, create_classifier
from timm.models import checkpoint_seq

# timm's index rule for forward_intermediates (last n / given / all), not exported from timm.models itself
from timm.models._features import feature_take_indices


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


class CifarClassifier(nn.Module):
    """What every family shares: a stem, a sequence of stages, an optional final norm, global pooling and a
    linear classifier, with timm's model API over them (``forward_features``/``forward_head``,
    ``reset_classifier``, ``forward_intermediates``/``prune_intermediate_layers``, gradient checkpointing).

    A family sets ``stage_names`` (module paths of its stages, in order), ``final_norm_names`` (the modules
    after the last stage: a pre-activation network's closing BN and ReLU), ``classifier_attr`` (the authors'
    name for the classifier, ``linear`` or ``fc``, so their checkpoints load unchanged), implements
    :meth:`forward_stem`, builds ``feature_info`` with one entry for the stem and one per stage, and calls
    :meth:`_init_head` at the end of ``__init__``.
    """

    # (no class-level annotations: TorchScript would read them as attribute types)
    stage_names = ()
    final_norm_names = ()
    classifier_attr = "linear"

    def __init__(self) -> None:
        super().__init__()
        self.grad_checkpointing = False

    def _init_head(self, num_features: int, num_classes: int, global_pool: str) -> None:
        self.num_features = self.head_hidden_size = num_features
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool)  # replaced in reset_classifier
        self.reset_classifier(num_classes, global_pool)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_attr)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none, the pooled features are the output); ``global_pool``
        ``''`` removes the pooling too (the output is then the unpooled feature map), None keeps it."""
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, classifier = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.num_classes = num_classes
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        # on the model's device and dtype (timm < 1.0.22's create_classifier takes neither)
        setattr(self, self.classifier_attr, classifier.to(self.conv1.weight))

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled final feature map (stem, stages, final norm)."""
        raise NotImplementedError

    @torch.jit.ignore
    def forward_final_norm(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.final_norm_names:
            x = getattr(self, name)(x)
        return x

    def _stages(self) -> list[nn.Module]:
        return [self.get_submodule(path) for path in self.stage_names]

    def _run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return checkpoint_seq(stage, x)
        return stage(x)

    @torch.jit.ignore
    def _forward_stages(self, x: torch.Tensor) -> torch.Tensor:
        """All stages, each checkpointed when gradient checkpointing is on (families' forward_features write
        the plain path out with their attribute names, so that it compiles with TorchScript)."""
        for stage in self._stages():
            x = self._run_stage(stage, x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        # The classifier by its attribute name (families with another name override this): TorchScript
        # cannot call get_classifier().
        return x if pre_logits else self.linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API: the final features and the intermediates at ``feature_info``'s taps.

        ``indices``: the last n taps (int), the given taps (sequence, negative from the end) or all (None).
        ``norm``: apply the final norm (pre-activation families) to the last stage's intermediate, as
        ``features_only`` does. ``stop_early``: run no stage after the last tap taken.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW' for {type(self).__name__}, got {output_fmt!r}")
        stages = self._stages()
        take_indices, max_index = feature_take_indices(len(stages) + 1, indices)
        if stop_early:
            stages = stages[:max_index]
        intermediates = []
        x = self.forward_stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        last = len(self.stage_names)
        for index, stage in enumerate(stages, start=1):
            x = self._run_stage(stage, x)
            if index in take_indices:
                intermediates.append(self.forward_final_norm(x) if norm and index == last else x)
        if intermediates_only:
            return intermediates
        if len(stages) == last:
            x = self.forward_final_norm(x)
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last tap in ``indices`` (and, with them, the final norm and the head, which
        are sized for the last stage). Returns the taps kept, as ``forward_intermediates`` numbers them."""
        take_indices, max_index = feature_take_indices(len(self.stage_names) + 1, indices)
        for path in self.stage_names[max_index:]:
            parent, _, leaf = path.rpartition(".")
            # empty Sequential, not Identity, so checkpoint_seq can still iterate it
            setattr(self.get_submodule(parent), leaf, nn.Sequential())
        prune_end = max_index < len(self.stage_names)
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_norm or prune_end:
            for name in self.final_norm_names:
                setattr(self, name, nn.Identity())
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices
