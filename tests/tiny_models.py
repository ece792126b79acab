"""A tiny CIFAR-10 classifier that is not trivial, built in seconds without training: a narrow ResNet-18 with
seeded random convolutions and a linear head fitted in closed form (ridge regression) on 2,000 bundled real
training images. About 30% clean accuracy, so attacks at small eps leave a mix of robust and broken samples
(per-sample masks worth comparing), at a fraction of the real ResNet-18's cost."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import timm
import torch

import cure_zoo  # noqa: F401  (registers the architectures)
from cure_zoo.data import load_bundled
from cure_zoo.io import save_weights, sha256_file

TINY_ARGS = {"widths": [8, 16, 32, 64]}


@functools.lru_cache(maxsize=1)
def _fitted() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet18", **TINY_ARGS).eval()
    train = load_bundled("cifar10", "train", n=2000)
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(train.images), pre_logits=True)
        mu, sd = feats.mean(0), feats.std(0) + 1e-6
        a = torch.cat([(feats - mu) / sd, torch.ones(len(feats), 1)], 1)
        w = torch.linalg.solve(
            a.T @ a + torch.eye(a.shape[1]), a.T @ torch.nn.functional.one_hot(train.labels, 10).float()
        )
        head = model.get_classifier()
        head.weight.copy_((w[:-1] / sd[:, None]).T)
        head.bias.copy_(w[-1] - (mu / sd) @ w[:-1])
    return model


def tiny_model() -> torch.nn.Module:
    """A fresh copy (callers may move or modify it)."""
    return copy.deepcopy(_fitted())


def save_run_dir(directory: Path) -> Path:
    """The tiny model as a training run directory (model.safetensors + config.json), as recipes write it."""
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(_fitted().state_dict(), directory / "model.safetensors")
    config = {
        "architecture": "cifar_resnet18",
        "num_classes": 10,
        "model_args": TINY_ARGS,
        "cure_zoo": {"model_name": "tiny_test_model", "dataset": "cifar10",
                     "weights_sha256": sha256_file(directory / "model.safetensors")},
    }  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config))
    return directory
