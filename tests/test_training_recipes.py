"""Recipes: every shipped recipe resolves, holds Table 9's values, and works under both presets; bad keys and
values are rejected with an error that names the key; the layer-wise AT option freezes what it should."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml

import cure_zoo  # noqa: F401
from cure_zoo.data import load_bundled
from cure_zoo.models.zoo import PAPER_PAIRS
from cure_zoo.training.methods import Batch, StepContext, build_method
from cure_zoo.training.recipe import PRESETS, RECIPES_DIR, RecipeError, available_recipes, load_recipe

TABLE9 = {  # (arch, dataset) -> (p, alpha, gamma), paper Table 9; ResNet-50/101 use ResNet-18's (App. C.2)
    ("resnet18", "cifar10"): (30, 0.1, 1.0),
    ("resnet18", "cifar100"): (30, 0.1, 1.0),
    ("resnet18", "svhn"): (30, 0.2, 1.0),
    ("wrn34_10", "cifar10"): (50, 0.3, 0.5),
    ("wrn34_10", "cifar100"): (50, 0.3, 0.5),
    ("preactresnet18", "cifar10"): (20, 0.2, 1.0),
    ("resnet50", "cifar10"): (30, 0.1, 1.0),
    ("resnet101", "cifar10"): (30, 0.1, 1.0),
}


def test_there_is_a_recipe_for_every_method_and_paper_pair():
    names = set(available_recipes())
    for arch, dataset in PAPER_PAIRS:
        for method in ("st", "at", "trades", "cure"):
            assert f"{method}_{arch}_{dataset}" in names
    assert {"smoke_cure_cifar10", "cure_eff_resnet18_cifar10", "at_layerwise_resnet18_cifar10"} <= names


@pytest.mark.parametrize("name", available_recipes())
def test_every_recipe_resolves_with_the_common_settings(name):
    r = load_recipe(name)
    if name.startswith("smoke"):
        return
    o = r.optim
    small = name.endswith("_cifar10_5k")  # the CIFAR-10-5k track: 8 epochs, the same fractions of the schedule
    schedule = (8, [5, 7]) if small else (200, [100, 150])
    assert (o.lr, o.momentum, o.epochs, o.milestones, o.gamma, o.batch_size) == (0.1, 0.9, *schedule, 0.1, 128)
    assert r.data.augment and r.attack.steps == 10
    if small:
        assert r.data.source == "bundled" and r.model.architecture == "cifar_resnet18_w16"
        if "_no_" in name:  # the Table 7 ablations: runs, not zoo models
            assert r.model_name is None and not (r.cure.rgp and r.cure.revise)
        else:
            assert r.model_name.split(".")[0].endswith("_resnet18_w16_cifar10_5k")
        assert r.model.init in (None, "st_resnet18_w16_cifar10_5k")
    else:
        assert r.model_name is None or r.model_name.split("_", 1)[1] == name.split("_", 1)[1].removeprefix("eff_")
    if r.method == "at":
        assert (r.attack.objective, r.attack.start) == ("ce", "uniform")
    if r.method == "trades":
        assert r.trades.beta == 6.0 and r.attack.objective == "kl"


@pytest.mark.parametrize(("arch", "dataset"), list(TABLE9))
def test_cure_recipes_have_table9_values_and_start_from_the_st_model(arch, dataset):
    r = load_recipe(f"cure_{arch}_{dataset}")
    assert (r.cure.p, r.cure.alpha, r.cure.gamma) == TABLE9[(arch, dataset)]
    assert (r.cure.revision_rate, r.cure.revision_decay) == (0.2, 0.999)
    assert r.model.init == f"st_{arch}_{dataset}"
    assert r.preset == "paper" and r.cure.beta == 1.0 and r.optim.weight_decay == 5e-3 and r.cure.masking == "rgp"


def test_presets_switch_every_preset_key_and_recipes_leave_them_to_the_preset():
    for path in RECIPES_DIR.glob("cure*.yaml"):
        data = yaml.safe_load(path.read_text())
        flat = {f"{s}.{k}" for s, sec in data.items() if isinstance(sec, dict) for k in sec}
        assert not flat & set(PRESETS["official"]), path.name
    official = load_recipe("cure_resnet18_cifar10", ["preset=official"])
    assert official.cure.masking == "rgp_soft" and official.cure.beta == 5.0
    assert official.optim.weight_decay == 5e-4 and (official.attack.eps, official.attack.step_size) == (0.031, 0.007)
    assert (official.cure.p, official.cure.alpha) == (30.0, 0.1)  # Table 9 values kept
    tweaked = load_recipe("cure_resnet18_cifar10", ["preset=official", "cure.beta=3"])
    from cure_zoo.training.recipe import preset_departures

    assert preset_departures(tweaked) == {"cure.beta": 3.0}


@pytest.mark.parametrize(
    ("name", "switches"),
    [
        ("cure_no_rgp_resnet18_w16_cifar10_5k", {"rgp": False}),
        ("cure_no_revise_resnet18_w16_cifar10_5k", {"revise": False}),
        ("cure_no_rgp_no_revise_resnet18_w16_cifar10_5k", {"rgp": False, "revise": False}),
    ],
)
def test_table7_ablation_recipes_are_the_base_recipe_with_their_switches_off(name, switches):
    base, ablation = load_recipe("cure_resnet18_w16_cifar10_5k").to_dict(), load_recipe(name).to_dict()
    for key in ("name", "model_name", "description"):
        base.pop(key), ablation.pop(key)
    assert {k: v for k, v in ablation["cure"].items() if base["cure"][k] != v} == switches
    ablation["cure"] = base["cure"]
    assert ablation == base


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cure.bta=1", r"unknown recipe key 'cure\.bta'; did you mean 'cure\.beta'"),
        ("optimizer.lr=0.1", r"unknown recipe key 'optimizer\.lr'"),
        ("optim.lr=fast", r"recipe key 'optim\.lr' must be a number, got 'fast'"),
        ("optim.epochs=2.5", r"recipe key 'optim\.epochs' must be an integer"),
        ("run.progress=3", r"recipe key 'run\.progress' must be true/false"),
        ("cure.masking=magnitude", r"recipe key 'cure\.masking' must be 'rgp' \| 'rgp_soft' \| 'none'"),
        ("cure.p=100", r"recipe key 'cure\.p' must be a percentage in \[0, 100\)"),
        ("cure.alpha=1.5", r"recipe key 'cure\.alpha' must be in \[0, 1\]"),
        ("optim.lr=-1", r"recipe key 'optim\.lr' must be > 0"),
        ("optim.milestones=[150, 100]", r"recipe key 'optim\.milestones' must be increasing"),
        ("model.architecture=resnet_nope", r"recipe key 'model\.architecture' must be a registered timm model"),
        ("model_name=cure_resnet18_cifar100", r"recipe key 'model_name' must match"),
        ("preset=fast", r"recipe key 'preset' must be"),
        ("layerwise.update=U-23", r"recipe key 'layerwise\.update' is an option of method 'at'"),
        ("lr=0.1", r"unknown recipe key 'lr'"),
        ("cure.revise=maybe", r"recipe key 'cure\.revise' must be true/false"),
        ("run.grad_stats_every=-1", r"recipe key 'run\.grad_stats_every' must be >= 0"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe("cure_resnet18_cifar10", [override])


def test_preset_on_a_baseline_and_bad_layerwise_spec_are_rejected():
    with pytest.raises(RecipeError, match="'preset' applies to CURE"):
        load_recipe("trades_resnet18_cifar10", ["preset=official"])
    with pytest.raises(RecipeError, match=r"'cure\.rgp' switches off a CURE component \(method is 'trades'\)"):
        load_recipe("trades_resnet18_cifar10", ["cure.rgp=false"])
    with pytest.raises(RecipeError, match="'layerwise.update' must look like"):
        load_recipe("at_layerwise_resnet18_cifar10", ["layerwise.update=U-5a"])
    with pytest.raises(
        RecipeError, match=r"no recipe named 'cure_resnet18_cifar1' in .*; did you mean cure_resnet18_cifar10"
    ):
        load_recipe("cure_resnet18_cifar1")


@pytest.mark.slow
def test_cli_reports_a_bad_key_in_one_line_with_status_2(tmp_path):
    train_py = Path(__file__).resolve().parents[1] / "recipes" / "train.py"
    done = subprocess.run(
        [
            sys.executable,
            str(train_py),
            "--recipe",
            "smoke_cure_cifar10",
            "--set",
            "cure.gama=1",
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: unknown recipe key 'cure.gama'; did you mean 'cure.gamma'?"
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("reinit", [True, False])
def test_layerwise_at_updates_only_the_chosen_blocks(reinit):
    recipe = load_recipe(
        None,
        {
            "method": "at",
            "model.architecture": "cifar_resnet18",
            "model.args": {"widths": [4, 8, 8, 8]},
            "layerwise.update": "U-23",
            "layerwise.reinit": reinit,
            "attack.steps": 2,
        },
    )
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet18", widths=(4, 8, 8, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = build_method(recipe, model)
    method.prepare()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("layer2.", "layer3.")) for n in trainable)
    assert {n for n, _ in model.named_parameters() if n.startswith(("layer2.", "layer3."))} == trainable
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    if reinit:
        assert {k.split(".")[0] for k in changed} == {"layer2", "layer3"}  # re-initialised, nothing else
    else:
        assert not changed
    data = load_bundled("cifar10", "train", n=8)
    g = torch.Generator().manual_seed(0)
    batch = Batch(data.images, data.labels, 1.0, lambda kind: torch.rand(data.images.shape, generator=g))
    method.step(batch, StepContext(1, contextlib.nullcontext, lambda tensors: None))
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (name in trainable), name


def test_the_one_list_of_methods_matches_the_method_classes():
    from cure_zoo.models.zoo import CURE_METHODS, METHODS
    from cure_zoo.training.methods import METHOD_CLASSES
    from cure_zoo.training.methods.cure import Cure

    assert set(METHOD_CLASSES) == set(METHODS)
    assert {name for name, cls in METHOD_CLASSES.items() if issubclass(cls, Cure)} == set(CURE_METHODS)
