"""The model families: registration, the timm model API, parameter counts and the authors' key layout."""

import re

import pytest
import timm
import torch
from PIL import Image

import cure_zoo
from cure_zoo.models.zoo import PAPER_PAIRS, ZOO

from .conftest import DATA_DIR

REQUIRED_NAMES = [
    "cure_resnet18_cifar10",
    "cure_resnet18_cifar100",
    "cure_resnet18_svhn",
    "cure_wrn34_10_cifar10",
    "cure_wrn34_10_cifar100",
    "cure_preactresnet18_cifar10",
    "cure_resnet50_cifar10",
    "cure_resnet101_cifar10",
]
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10}
ARCHITECTURES = [
    "cifar_resnet18",
    "cifar_resnet34",
    "cifar_resnet50",
    "cifar_resnet101",
    "cifar_preactresnet18",
    "cifar_wrn28_10",
    "cifar_wrn34_10",
    "cifar_wrn70_16",
]


def test_list_models_lists_exactly_the_cure_models():
    assert sorted(timm.list_models("cure_*")) == sorted(REQUIRED_NAMES)


@pytest.mark.parametrize("method", ["cure", "st", "at", "trades"])
@pytest.mark.parametrize("arch,dataset", PAPER_PAIRS)
def test_every_zoo_name_builds_with_its_classes(method, arch, dataset):
    name = f"{method}_{arch}_{dataset}"
    with torch.device("meta"):
        model = timm.create_model(name)
    assert model.num_classes == NUM_CLASSES[dataset]
    assert model.pretrained_cfg["num_classes"] == NUM_CLASSES[dataset]
    # The same model under timm's architecture.tag convention.
    tagged = f"cifar_{arch}.{method}_{dataset}"
    assert timm.get_pretrained_cfg(tagged).num_classes == NUM_CLASSES[dataset]


def _fwd_bwd_all_params(model, batch=2):
    model.train()
    out = model(torch.rand(batch, 3, 32, 32))
    out.logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a (finite) gradient: {missing[:5]}"
    return out


@pytest.mark.parametrize("name", sorted({e.model_name for e in ZOO}))
def test_forward_backward_every_registered_zoo_model(name):
    model = timm.create_model(name)
    out = _fwd_bwd_all_params(model)
    assert out.shape == (2, model.num_classes)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_forward_backward_every_architecture(name):
    model = timm.create_model(name, num_classes=7)
    assert _fwd_bwd_all_params(model).shape == (2, 7)


@pytest.mark.parametrize(
    "name,count",
    [
        ("cure_resnet18_cifar10", 11_173_962),
        ("cure_preactresnet18_cifar10", 11_172_170),
        ("cure_wrn34_10_cifar10", 46_160_474),
    ],
)
def test_parameter_counts_equal_the_authors_models(name, count):
    model = timm.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == count


def _official_keys(filename):
    keys = {}
    for line in (DATA_DIR / filename).read_text().splitlines():
        m = re.match(r"^[PB] (\S+) \(([\d, ]*)\)", line)
        if m:
            keys[m.group(1)] = tuple(int(s) for s in m.group(2).replace(" ", "").split(",") if s)
    return keys


@pytest.mark.parametrize(
    "name,filename",
    [
        ("cure_resnet18_cifar10", "cure_state_dict_resnet18_cifar10.txt"),
        ("cure_preactresnet18_cifar10", "cure_state_dict_preactresnet18_cifar10.txt"),
        ("cure_wrn34_10_cifar10", "cure_state_dict_wrn34_10_cifar10.txt"),
    ],
)
def test_state_dict_is_the_authors_layout(name, filename):
    official = _official_keys(filename)
    ours = {k: tuple(v.shape) for k, v in timm.create_model(name).state_dict().items()}
    assert ours == official


@pytest.mark.parametrize(
    "name,channels,reductions",
    [
        ("cure_resnet18_cifar10", [64, 64, 128, 256, 512], [1, 1, 2, 4, 8]),
        ("cure_resnet50_cifar10", [64, 256, 512, 1024, 2048], [1, 1, 2, 4, 8]),
        ("cure_preactresnet18_cifar10", [64, 64, 128, 256, 512], [1, 1, 2, 4, 8]),
        ("cure_wrn34_10_cifar10", [16, 160, 320, 640], [1, 1, 2, 4]),
    ],
)
def test_features_only_shapes_match_feature_info(name, channels, reductions):
    model = timm.create_model(name, features_only=True)
    assert model.feature_info.channels() == channels
    assert model.feature_info.reduction() == reductions
    feats = model(torch.rand(2, 3, 32, 32))
    assert [f.shape[1] for f in feats] == channels
    assert [32 // f.shape[-1] for f in feats] == reductions


@pytest.mark.parametrize("name", ["cure_resnet18_cifar10", "cure_preactresnet18_cifar10", "cifar_wrn28_10"])
def test_forward_features_head_and_reset_classifier(name):
    model = timm.create_model(name).eval()
    x = torch.rand(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, model.num_features)
    torch.testing.assert_close(model.forward_head(feats), model(x))
    assert model.get_classifier() is model.get_submodule(model.pretrained_cfg["classifier"])
    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.num_classes == 5
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


@pytest.mark.parametrize("name", ["cure_resnet18_cifar10", "cure_wrn34_10_cifar100", "st_resnet18_cifar10.autoattack"])
def test_pretrained_cfg_states_inputs_source_and_paper(name):
    model = timm.create_model(name)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32)
    assert cfg["mean"] == (0.0, 0.0, 0.0) and cfg["std"] == (1.0, 1.0, 1.0)
    assert cfg["paper_ids"] == "arXiv:2401.14948"
    assert cfg["license"] and cfg["origin_url"].startswith("https://")
    assert isinstance(model.get_submodule(cfg["first_conv"]), torch.nn.Conv2d)
    assert isinstance(model.get_submodule(cfg["classifier"]), torch.nn.Linear)
    assert model.default_cfg is model.pretrained_cfg


def test_timm_data_config_yields_unit_range_tensors():
    model = timm.create_model("cure_resnet18_cifar10")
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    pixels = (torch.arange(32 * 32 * 3) % 256).to(torch.uint8).reshape(32, 32, 3)
    x = transform(Image.fromarray(pixels.numpy()))
    torch.testing.assert_close(x, pixels.permute(2, 0, 1).float() / 255)


def test_normalisation_lives_in_the_model_without_state_dict_keys():
    plain = timm.create_model("cure_resnet18_cifar10").eval()
    normed = timm.create_model("cure_resnet18_cifar10", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)).eval()
    normed.load_state_dict(plain.state_dict())
    assert plain.state_dict().keys() == normed.state_dict().keys()
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(normed(x), plain((x - mean) / std))


def test_import_registers_without_side_effects():
    assert cure_zoo.__version__
    assert timm.is_model("cure_wrn34_10_cifar10") and timm.is_model("cifar_wrn70_16")
