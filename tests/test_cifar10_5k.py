"""The CIFAR-10-5k models shipped inside the package (small scale: quarter-width ResNet-18s trained on the
5,438 bundled CIFAR-10 images by benchmarks/cifar10_5k/campaign.py): they load offline by name with their
pinned sha256, their published claims re-measure on a subset, and a robust one makes AutoAttack run all four
sub-attacks exactly as pyautoattack does."""

from __future__ import annotations

import json
import shutil

import pytest
import timm
import torch
from safetensors.torch import load_file

import cure_zoo  # noqa: F401  (registers the models)
import cure_zoo.models.zoo as zoo
from cure_zoo.cli.main import main as cli
from cure_zoo.errors import WeightsIntegrityError
from cure_zoo.evaluation.result import EvalResult
from cure_zoo.io import sha256_file

PACKAGE = [e for e in zoo.ZOO if e.weights_source == "package"]
ROBUST = "cure_resnet18_w16_cifar10_5k"


SHIPPED = [e for e in PACKAGE if e.published]


def test_a_shipped_folder_is_pinned_and_a_pinned_model_is_shipped_with_its_claims():
    assert len(PACKAGE) == 6 and ROBUST in {e.name for e in SHIPPED}
    folders = {p.name for p in zoo.BUNDLED_DIR.iterdir() if (p / "eval.json").is_file()}
    assert folders == {e.name for e in SHIPPED}  # no evaluated folder without a pin, no pin without its files
    for e in SHIPPED:
        assert {"nat", "pgd20", "cw20", "aa", "nrr_cw"} <= set(e.claims), e.name
        assert "not the paper's models" in e.description
        card = (e.bundled_dir / "README.md").read_text()
        assert "Small-scale model: trained on 5,438 images at quarter width" in card


@pytest.mark.parametrize("entry", SHIPPED, ids=lambda e: e.name)
def test_loads_offline_by_name_with_the_pinned_sha256(entry):
    model = timm.create_model(entry.name, pretrained=True)
    file = model.pretrained_cfg["file"]
    assert sha256_file(file) == entry.weights_sha256
    config = json.loads((entry.bundled_dir / "config.json").read_text())["cure_zoo"]
    assert config["weights_sha256"] == entry.weights_sha256 == config["claims"]["weights_sha256"]
    shipped = load_file(file)
    assert all(torch.equal(shipped[k], v) for k, v in model.state_dict().items())
    assert sum(p.numel() for p in model.parameters()) == 701_466


def test_a_changed_shipped_file_is_refused(tmp_path, monkeypatch):
    """The check every shipped load goes through (a copy of the package folder, one bit flipped)."""
    from cure_zoo.models._hub import package_weights_file

    copy = tmp_path / "bundled"
    shutil.copytree(zoo.BUNDLED_DIR / ROBUST, copy / ROBUST)
    weights = copy / ROBUST / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of the last tensor
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(zoo, "BUNDLED_DIR", copy)
    entry = zoo.find_entry(ROBUST)
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        package_weights_file(entry, ROBUST)
    weights.write_bytes(bytes(data[:-1]) + bytes([data[-1] ^ 1]))  # restored: accepted again
    assert package_weights_file(entry, ROBUST) == weights


def test_the_cure_model_is_robust_and_its_record_says_so():
    """The shipped evaluation of the CURE model: real robustness (well above a natural model's 0%)."""
    entry = zoo.find_entry(ROBUST)
    record = EvalResult.load(entry.bundled_dir / "eval.json")
    assert record.n_examples >= 100
    assert record.results["aa"]["accuracy"] >= 5.0  # a natural model: 0
    assert set(record.results["aa"]["stages"]) == {"apgd-ce", "apgd-t", "fab-t", "square"}
    # published.json pins the headline claims to two decimals
    assert record.results["aa"]["accuracy"] == pytest.approx(entry.claims["aa"], abs=0.005)


def test_claims_re_measured_on_a_subset_hold(capsys):
    """cure-zoo verify on the first 40 images: nat, PGD-20 and CW-inf claims hold (exit status 0)."""
    status = cli(["verify", ROBUST, "--n-examples", "40", "--attacks", "nat,pgd20,cw20", "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "pgd20" in out.lower()


@pytest.mark.slow
def test_verify_passes_end_to_end_on_a_real_robust_claim(capsys):
    """Every claimed attack, AutoAttack included, re-measured on the first 20 claimed images."""
    status = cli(["verify", ROBUST, "--n-examples", "20", "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0, out


@pytest.mark.slow
def test_autoattack_equals_pyautoattack_on_a_robust_model_with_all_four_sub_attacks_running():
    """The CURE 5k model at the standard 8/255: test image 16 survives all four sub-attacks (its shipped
    evaluation says so), image 0 does not, so APGD-CE, APGD-T, FAB-T and Square all run; our wrapper and
    pyautoattack called directly (same seed, same batch) agree per image and bit for bit on the images. (This
    replaces the same check on a tiny fitted model at 0.25/255; one surviving image is what makes it cost a
    minute per run, so there is one.)"""
    import pyautoattack

    from cure_zoo.data import load_bundled
    from cure_zoo.evaluation.autoattack import run_autoattack

    model = timm.create_model(ROBUST, pretrained=True).eval()
    test = load_bundled("cifar10", "test")
    pick = [0, 16]
    x, y = test.images[pick], test.labels[pick]
    ours = run_autoattack(model, x, y, eps=8 / 255, seed=0, batch_size=2, device=torch.device("cpu"))
    direct = pyautoattack.AutoAttack(model, norm="Linf", eps=8 / 255, version="standard", seed=0, device="cpu")
    x_direct, y_direct = direct.run_standard_evaluation(x, y, batch_size=2)
    assert list(ours.accuracy_after) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert set(ours.seconds) == {"apgd-ce", "apgd-t", "fab-t", "square"}
    assert torch.equal(ours.x_adv, x_direct) and torch.equal(ours.robust, y_direct == y)
    assert ours.robust.tolist() == [False, True]
