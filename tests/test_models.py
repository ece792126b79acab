"""The model families: registration, the timm model API, parameter counts and the authors' key layout."""

import re

import pytest
import timm
import torch
from PIL import Image

import cure_zoo
from cure_zoo.models import preact_resnet, resnet, wide_resnet
from cure_zoo.models._hub import shipped_weights_file
from cure_zoo.models.zoo import PAPER_PAIRS, ZOO, find_entry

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


ZOO_NAMES = sorted({e.model_name for e in ZOO})
# every name we register, tags included (timm lists cifar_resnet18.cure_cifar10 and the flat names)
OUR_NAMES = sorted(
    n
    for n in timm.list_models(include_tags=True)
    if n.split(".")[0] in set(ZOO_NAMES) | set(ARCHITECTURES) | {"cifar_resnet18_w16"}
)


def test_list_models_lists_the_papers_cure_models_and_the_tables_rest():
    assert set(REQUIRED_NAMES) <= set(timm.list_models("cure_*"))
    assert sorted(timm.list_models("cure_*")) == sorted(e.model_name for e in ZOO if e.method == "cure" and not e.tag)


def test_each_flat_zoo_name_is_listed_once_in_its_family_module():
    listed = [*resnet.ZOO_MODELS, *preact_resnet.ZOO_MODELS, *wide_resnet.ZOO_MODELS]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == ZOO_NAMES
    for module in (resnet, preact_resnet, wide_resnet):
        for name in module.ZOO_MODELS:
            assert timm.is_model(name) and getattr(module, name).__module__ == module.__name__


@pytest.mark.parametrize("name", OUR_NAMES)
def test_every_registered_name_builds_with_a_consistent_config(name):
    """Construction and config of every name (tags included), on the meta device: no weights are allocated."""
    entry = find_entry(name)
    with torch.device("meta"):
        model = timm.create_model(name).eval()
        features = model.forward_features(torch.empty(1, 3, 32, 32))
    cfg = model.pretrained_cfg
    if entry is not None:
        assert model.num_classes == cfg["num_classes"] == NUM_CLASSES[entry.dataset]
        assert model.default_cfg["architecture"] == name.split(".")[0]
    assert cfg["input_size"] == (3, 32, 32) and cfg["mean"] == (0.0,) * 3 and cfg["std"] == (1.0,) * 3
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state and f"{cfg['classifier']}.weight" in state
    assert model.get_classifier() is model.get_submodule(cfg["classifier"])
    assert tuple(features.shape) == (1, model.num_features, *cfg["pool_size"])
    assert model.head_hidden_size == model.num_features > 0


def test_tagged_names_match_their_flat_names():
    for method, arch, dataset in [(m, a, d) for a, d in PAPER_PAIRS for m in ("cure", "st", "at", "trades")]:
        flat, tagged = f"{method}_{arch}_{dataset}", f"cifar_{arch}.{method}_{dataset}"
        assert timm.get_pretrained_cfg(tagged).num_classes == timm.get_pretrained_cfg(flat).num_classes
        assert find_entry(tagged) is find_entry(flat)


def test_default_cfg_is_the_tables_first_entry_whatever_has_weights():
    # st_resnet18_cifar10 is the zoo's own natural model; AutoAttack's (which has weights) is only a tag
    assert timm.get_pretrained_cfg("st_resnet18_cifar10").tag is None
    assert timm.get_pretrained_cfg("st_resnet18_cifar10.autoattack").tag == "autoattack"
    assert timm.get_pretrained_cfg("cifar_resnet18").tag == "cure_cifar10"
    assert timm.get_pretrained_cfg("cifar_resnet18_w16").tag == "st_cifar10_5k"


def test_list_models_pretrained_lists_exactly_the_weights_the_zoo_vouches_for():
    listed = set(timm.list_models(pretrained=True, include_tags=True)) & set(OUR_NAMES)
    vouched = {n for n in OUR_NAMES if find_entry(n) is not None and shipped_or_published(find_entry(n))}
    assert listed == vouched
    assert "st_resnet18_cifar10.autoattack" in listed  # pyautoattack's ResNet-18 ships with a dependency
    assert "cure_resnet18_cifar10" not in listed  # nothing published on the Hub yet


def shipped_or_published(entry) -> bool:
    if entry.weights_source == "hub":
        return entry.published
    return entry.published and shipped_weights_file(entry) is not None


def _fwd_bwd_all_params(model, batch=2):
    model.train()
    out = model(torch.rand(batch, 3, 32, 32))
    out.logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a (finite) gradient: {missing[:5]}"
    return out


# Each architecture's topology (depth, blocks, shortcuts) at a small width, so one pass is cheap.
SMALL = {
    "cifar_wrn28_10": dict(widen_factor=1),
    "cifar_wrn34_10": dict(widen_factor=1),
    "cifar_wrn70_16": dict(widen_factor=1),
}
SMALL_RESNET = dict(widths=(8, 16, 32, 64))
FAMILIES = ["cifar_resnet18", "cifar_resnet50", "cifar_preactresnet18", "cifar_wrn28_10"]


def _small(name, **kwargs):
    return timm.create_model(name, **SMALL.get(name, SMALL_RESNET), **kwargs)


@pytest.mark.parametrize("name", [*ARCHITECTURES, "cifar_resnet18_w16"])
def test_forward_backward_every_architecture(name):
    model = _small(name, num_classes=7)
    assert _fwd_bwd_all_params(model).shape == (2, 7)


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_intermediates_taps_indices_and_final_features(name):
    torch.manual_seed(0)
    model = _small(name).eval()
    x = torch.rand(2, 3, 32, 32)
    info = model.feature_info
    final, inters = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    assert [t.shape[1] for t in inters] == [f["num_chs"] for f in info]
    assert [32 // t.shape[-1] for t in inters] == [f["reduction"] for f in info]
    last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
    for a, b in zip(last_two, inters[-2:], strict=True):
        torch.testing.assert_close(a, b)
    picked = model.forward_intermediates(x, indices=[0, -2], intermediates_only=True)
    torch.testing.assert_close(picked[0], inters[0])
    torch.testing.assert_close(picked[1], inters[-2])
    early, taps = model.forward_intermediates(x, indices=[1], stop_early=True)
    torch.testing.assert_close(early, inters[1])  # no stage ran after the tap
    torch.testing.assert_close(taps[0], inters[1])
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")
    # norm=True: the last tap as features_only (whose last module is the final norm) gives it
    features = timm.create_model(name, features_only=True, **SMALL.get(name, SMALL_RESNET)).eval()
    features.load_state_dict(model.state_dict(), strict=False)
    normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)[0]
    torch.testing.assert_close(normed, features(x)[-1])
    model.set_grad_checkpointing()
    torch.testing.assert_close(model.forward_intermediates(x)[0], final)


@pytest.mark.parametrize("name", FAMILIES)
def test_prune_intermediate_layers_keeps_the_taps_and_drops_the_rest(name):
    torch.manual_seed(0)
    model = _small(name).eval()
    x = torch.rand(2, 3, 32, 32)
    before = model.forward_intermediates(x, intermediates_only=True)
    n_params = sum(p.numel() for p in model.parameters())
    assert model.prune_intermediate_layers([1, 2]) == [1, 2]
    after = model.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
    torch.testing.assert_close(after[0], before[1])
    torch.testing.assert_close(after[1], before[2])
    assert sum(p.numel() for p in model.parameters()) < n_params
    assert model.num_classes == 0 and model.num_features == model.feature_info[2]["num_chs"]
    assert model(x).shape == before[2].shape  # head and pooling gone: the last kept tap


@pytest.mark.parametrize("name", FAMILIES)
def test_features_only_getter_uses_forward_intermediates(name):
    model = _small(name, features_only=True, feature_cls="getter").eval()
    feats = model(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == model.feature_info.channels()
    assert [32 // f.shape[-1] for f in feats] == model.feature_info.reduction()


@pytest.mark.parametrize("name", FAMILIES)
def test_classifier_and_pooling_removal(name):
    model = _small(name).eval()
    x = torch.rand(2, 3, 32, 32)
    spatial = tuple(model.forward_features(x).shape[-2:])
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features) and model.num_classes == 0
    model.reset_classifier(0, "")
    assert model(x).shape == (2, model.num_features, *spatial)
    model.reset_classifier(3, "catavgmax")
    assert model.head_hidden_size == 2 * model.num_features and model(x).shape == (2, 3)
    unpooled = _small(name, num_classes=0, global_pool="").eval()
    assert unpooled(x).shape == (2, unpooled.num_features, *spatial)
    assert unpooled.forward_head(unpooled.forward_features(x), pre_logits=True).shape == (2, *unpooled(x).shape[1:])


@pytest.mark.parametrize("name", FAMILIES)
def test_torchscript_gives_the_eager_outputs(name):
    model = _small(name).eval()
    x = torch.rand(2, 3, 32, 32)
    with timm.set_scriptable(True):
        scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize("name", FAMILIES)
def test_fx_traced_model_scripts_and_gives_the_eager_outputs(name):
    # timm's suite traces every model with torch.fx and scripts the graph: string annotations (a module with
    # ``from __future__ import annotations``) end up in the generated code and TorchScript cannot read them
    from torchvision.models.feature_extraction import create_feature_extractor

    model = _small(name).eval()
    x = torch.rand(2, 3, 32, 32)
    traced = create_feature_extractor(model, return_nodes=["linear" if "wrn" not in name else "fc"])
    scripted = torch.jit.script(traced)
    torch.testing.assert_close(list(scripted(x).values())[0], model(x))


SHIPPED = "st_resnet18_w16_cifar10_5k"


def test_pretrained_weights_follow_timms_in_chans_and_num_classes_conventions():
    base = timm.create_model(SHIPPED, pretrained=True).eval()
    grey = timm.create_model(SHIPPED, pretrained=True, in_chans=1, num_classes=5)
    # in_chans=1: the first convolution's kernels summed over the three input channels (timm's adapt_input_conv)
    torch.testing.assert_close(grey.conv1.weight, base.conv1.weight.sum(1, keepdim=True))
    assert grey.get_classifier().out_features == 5
    ours = base.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in grey.state_dict().items() if k.startswith("layer"))
    features = timm.create_model(SHIPPED, pretrained=True, num_classes=0).eval()
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(features(x), base.forward_head(base.forward_features(x), pre_logits=True))
    maps = timm.create_model(SHIPPED, pretrained=True, features_only=True).eval()
    torch.testing.assert_close(maps(x)[-1], base.forward_intermediates(x, intermediates_only=True)[-1])


@pytest.mark.parametrize(
    "name,count",
    [
        ("cure_resnet18_cifar10", 11_173_962),
        ("cure_preactresnet18_cifar10", 11_172_170),
        ("cure_wrn34_10_cifar10", 46_160_474),
    ],
)
def test_parameter_counts_equal_the_authors_models(name, count):
    with torch.device("meta"):
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
    with torch.device("meta"):
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
