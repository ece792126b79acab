"""Pretrained weights: the real AutoAttack ResNet-18, local files, the authors' checkpoint layout, errors."""

import pytest
import timm
import torch
from safetensors.torch import save_file

import cure_zoo  # noqa: F401
from cure_zoo.errors import PretrainedWeightsError, UnknownModelError
from cure_zoo.models.loader import load_model


@pytest.mark.slow
def test_autoattack_resnet18_natural_accuracy_on_real_cifar10(autoattack_resnet18, cifar10_test):
    with torch.no_grad():
        pred = torch.cat([autoattack_resnet18(x).argmax(1) for x in cifar10_test.images.split(256)])
    acc = (pred == cifar10_test.labels).float().mean().item()
    # A naturally trained ResNet-18 gets ~94-95% on CIFAR-10; on these 1,017 real images we measured 93.8%.
    assert acc > 0.92, acc


def test_autoattack_weights_are_cached_as_safetensors_and_state_their_source(autoattack_resnet18):
    cfg = autoattack_resnet18.pretrained_cfg
    assert cfg["file"].endswith("model.safetensors") and cfg["license"] == "mit"
    assert "auto-attack" in cfg["origin_url"]
    again = timm.create_model("cifar_resnet18.st_cifar10_autoattack", pretrained=True)
    for a, b in zip(autoattack_resnet18.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_local_safetensors_file_loads_bit_identically(tmp_path, autoattack_resnet18):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in autoattack_resnet18.state_dict().items()}, str(path))
    model = timm.create_model("cure_resnet18_cifar10", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    for (k, a), b in zip(autoattack_resnet18.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("wrap", ["state_dict", "model", None])
def test_authors_dict_checkpoints_load_with_module_prefix(tmp_path, wrap, autoattack_resnet18):
    sd = {f"module.{k}": v for k, v in autoattack_resnet18.state_dict().items()}
    ckpt = {wrap: sd, "epoch": 200, "precision": 0.9} if wrap else sd
    path = tmp_path / "ckpt.pth"
    torch.save(ckpt, path)
    model = timm.create_model("cure_resnet18_cifar10", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert torch.equal(model.linear.weight, autoattack_resnet18.linear.weight)


def test_unpublished_weights_give_one_clear_error():
    with pytest.raises(PretrainedWeightsError) as info:
        timm.create_model("cure_wrn34_10_cifar10", pretrained=True)
    msg = str(info.value)
    assert "\n" not in msg
    assert "cure_wrn34_10_cifar10" in msg and "cure-zoo/cure_wrn34_10_cifar10" in msg
    assert "recipes/train.py" in msg and "pretrained_cfg_overlay=dict(file=" in msg


def test_custom_org_offline_error_names_repo_and_reason(monkeypatch):
    monkeypatch.setenv("CURE_ZOO_HF_ORG", "my-lab")
    with pytest.raises(PretrainedWeightsError, match=r"'my-lab/cure_resnet18_cifar10' \(offline"):
        timm.create_model("cure_resnet18_cifar10", pretrained=True)


def test_missing_local_file_is_a_clear_error(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        timm.create_model(
            "cure_resnet18_cifar10",
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(tmp_path / "nope.safetensors")),
        )


@pytest.mark.parametrize(
    "name,suggestion",
    [
        ("cure_resnet19_cifar10", "cure_resnet18_cifar10"),
        ("st_resnet18_cifar10.autoatack", "st_resnet18_cifar10.autoattack"),
    ],
)
def test_unknown_names_suggest_the_closest(name, suggestion):
    with pytest.raises(UnknownModelError, match=f"did you mean {suggestion}"):
        load_model(name)


def test_loader_reports_weights_sha256(autoattack_resnet18):
    from cure_zoo.io import sha256_file

    loaded = load_model("st_resnet18_cifar10.autoattack")
    assert loaded.weights_sha256 == sha256_file(loaded.weights_file)
    assert not loaded.model.training
