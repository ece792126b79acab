"""Training options for several GPUs: SyncBatchNorm, and resuming a checkpoint written before a recipe key existed."""

from __future__ import annotations

import json

import pytest
import timm
import torch

import cure_zoo  # noqa: F401
from cure_zoo.errors import CureZooError
from cure_zoo.training import load_recipe, train
from cure_zoo.training.modeling import sync_batchnorm
from cure_zoo.training.trainer import recipe_changes


def _tiny():
    return timm.create_model("cifar_resnet18", widths=(4, 8, 8, 8))


def test_sync_batchnorm_keeps_names_and_values_and_is_a_no_op_for_one_process():
    model = _tiny()
    assert sync_batchnorm(model, 1, torch.device("cpu")) is model
    # conversion itself does not need a GPU (the synchronised forward does)
    converted = sync_batchnorm(_tiny(), 4, torch.device("cuda"))
    kinds = {type(m) for m in converted.modules()}
    assert torch.nn.SyncBatchNorm in kinds and torch.nn.BatchNorm2d not in kinds
    plain = _tiny()
    plain.load_state_dict(converted.state_dict(), strict=True)  # the weights load into the plain architecture


def test_sync_batchnorm_on_cpu_processes_is_a_clear_error():
    with pytest.raises(CureZooError, match="model.sync_batchnorm=true needs CUDA"):
        sync_batchnorm(_tiny(), 2, torch.device("cpu"))


@pytest.mark.slow
def test_sync_batchnorm_is_recorded_in_config_json(tmp_path):
    values = {
        "method": "st",
        "model.args": {"widths": [4, 8, 8, 8]},
        "model.sync_batchnorm": True,
        "data.source": "bundled",
        "data.train_examples": 16,
        "optim.batch_size": 16,
        "optim.epochs": 1,
        "eval.every": 0,
        "checkpoint.every_steps": 0,
        "run.progress": False,
        "run.tensorboard": False,
    }
    train(load_recipe(None, values), tmp_path)
    block = json.loads((tmp_path / "config.json").read_text())["cure_zoo"]
    assert block["recipe"]["model"]["sync_batchnorm"] is True
    off = load_recipe(None, {k: v for k, v in values.items() if k != "model.sync_batchnorm"})
    assert off.model.sync_batchnorm is False  # off by default


def test_a_checkpoint_from_before_a_new_recipe_key_still_resumes():
    new = load_recipe(None, {"method": "st"}).to_dict()
    old = json.loads(json.dumps(new))
    del old["model"]["sync_batchnorm"]  # written by a version without the key: it counts as its default
    assert recipe_changes(old, new) == {}
    changed = json.loads(json.dumps(new))
    changed["model"]["sync_batchnorm"] = True
    assert recipe_changes(changed, new) == {"model.sync_batchnorm": (True, False)}
