"""Reliability on bad input and odd environments: non-finite logits, inconsistent configs, YAML 1.2 numbers
and fractions in recipes, a leftover torchrun environment, Ctrl-C during training, exit codes, and the
one-line errors for damaged or mistyped files. Each test fails on the code before the fix."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

import cure_zoo  # noqa: F401
from cure_zoo.cli.main import main
from cure_zoo.data import load_bundled
from cure_zoo.errors import CureZooError
from cure_zoo.evaluation import evaluate
from cure_zoo.io import sha256_file
from cure_zoo.models.loader import load_model
from tests.tiny_models import save_run_dir, tiny_model

REPO = Path(__file__).resolve().parents[1]
TRAIN_PY = REPO / "recipes" / "train.py"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return save_run_dir(tmp_path_factory.mktemp("tiny") / "run")


def _variant(run_dir: Path, tmp_path: Path, *, config=None, weights=None) -> Path:
    """A copy of the tiny run with its config.json and/or weights changed, the sha256 in config.json updated
    so that the integrity check passes and what is tested is the loading itself."""
    out = tmp_path / "variant"
    shutil.copytree(run_dir, out)
    if weights is not None:
        weights(out / "model.safetensors")
    cfg = json.loads((out / "config.json").read_text())
    cfg["cure_zoo"]["weights_sha256"] = sha256_file(out / "model.safetensors")
    if config is not None:
        cfg = config(cfg)
    (out / "config.json").write_text(json.dumps(cfg))
    return out


# ---------------------------------------------------------------------------------------------------------
# non-finite logits (item 3)


class NaNOffCleanImages(nn.Module):
    """A real (tiny, fitted) classifier that returns NaN logits on any input that is not one of its clean
    test images, the symptom of a defence that breaks down under perturbation. argmax of a NaN row is class 0,
    so before the fix such a model scored "robust" on exactly its label-0 images."""

    def __init__(self, clean: torch.Tensor):
        super().__init__()
        self.inner = tiny_model()
        self.register_buffer("clean", clean.flatten(1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        is_clean = (x.flatten(1)[:, None, :] == self.clean[None]).all(2).any(1)
        return torch.where(is_clean[:, None], logits, torch.full_like(logits, float("nan")))


@pytest.fixture(scope="module")
def nan_images():
    return load_bundled("cifar10", "test", n=24)


def test_nan_logits_under_pgd_count_as_not_robust_and_are_flagged(nan_images):
    model = NaNOffCleanImages(nan_images.images)
    result = evaluate(model, nan_images, "nat,pgd20,cw20", batch_size=8, device="cpu", progress=False)
    nat = result.masks["nat"]
    assert nat.any() and (nan_images.labels == 0).any()  # there are label-0 images it could have "kept"
    assert not result.masks["pgd20"].any() and not result.masks["cw20"].any()
    assert result.results["pgd20"]["accuracy"] == 0.0
    assert any(f.startswith("pgd20: the model returned NaN or infinite logits for 24 of 24") for f in result.flags)
    assert any(f.startswith("cw20:") for f in result.flags)
    assert not any(f.startswith("nat:") for f in result.flags)  # clean logits are finite: no flag


@pytest.mark.slow
def test_nan_logits_under_autoattack_are_flagged_and_never_robust_where_seen(nan_images):
    model = NaNOffCleanImages(nan_images.images[:8])
    images = nan_images.take(8)
    result = evaluate(model, images, "nat,aa", batch_size=8, device="cpu", progress=False)
    assert any("NaN or infinite logits" in f and "upper bound" in f for f in result.flags), result.flags
    # every image AutoAttack perturbed came back with NaN logits: none of those counts as robust
    assert result.masks["aa"].sum() <= (images.labels[result.masks["nat"]] == 0).sum()


def test_nan_logits_in_the_training_check_count_as_wrong(nan_images):
    from contextlib import nullcontext

    from cure_zoo.training.epoch_eval import evaluate_epoch
    from cure_zoo.training.recipe import EvalConfig

    model = NaNOffCleanImages(nan_images.images)
    cfg = EvalConfig(batch_size=8, pgd_steps=2)
    out = evaluate_epoch(model, nan_images.images, nan_images.labels, cfg, nullcontext)
    assert out["pgd2_acc"] == 0.0 and out["nat_acc"] > 0
    assert out["nonfinite_logits"] == len(nan_images)


def test_the_rule_lives_in_one_function():
    from cure_zoo.attacks import classify

    logits = torch.tensor([[float("nan")] * 3, [0.0, float("inf"), 0.0], [0.0, 2.0, 1.0]])
    got = classify(logits, torch.tensor([0, 1, 1]))
    assert got.correct.tolist() == [False, False, True]
    assert got.nonfinite.tolist() == [True, True, False]


# ---------------------------------------------------------------------------------------------------------
# loading uses every tensor of the verified file (item 6, item 12's weights cases)


def test_inconsistent_num_classes_is_refused_not_a_random_head(run_dir, tmp_path):
    def inconsistent(cfg):
        cfg["num_classes"] = 100
        cfg["model_args"] = {**cfg["model_args"], "num_classes": 10}
        return cfg

    with pytest.raises(CureZooError, match="inconsistent: num_classes 100 but model_args num_classes 10"):
        load_model(str(_variant(run_dir, tmp_path, config=inconsistent)))


def test_num_classes_that_does_not_fit_the_weights_is_refused(run_dir, tmp_path):
    with pytest.raises(CureZooError, match=r"do not fit cifar_resnet18.*linear.weight: \(10, 64\) in the file"):
        load_model(str(_variant(run_dir, tmp_path, config=lambda c: {**c, "num_classes": 100})))


def _drop_tensor(path: Path) -> None:
    tensors = load_file(str(path))
    tensors.pop("conv1.weight")
    save_file(tensors, str(path))


def _reshape_tensor(path: Path) -> None:
    tensors = load_file(str(path))
    tensors["conv1.weight"] = torch.zeros(2, 3, 3, 3)
    save_file(tensors, str(path))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:4000]), "not a readable weights file"),
        (lambda p: p.write_bytes(os.urandom(3000)), "not a readable weights file"),
        (lambda p: p.write_bytes(b""), "not a readable weights file"),
        (_drop_tensor, "1 missing from the file"),
        (_reshape_tensor, r"conv1.weight: \(2, 3, 3, 3\) in the file"),
    ],
    ids=["truncated", "random", "empty", "missing_key", "mis_shaped"],
)
def test_weights_whose_sha_matches_but_do_not_load_are_one_error(run_dir, tmp_path, capsys, damage, message):
    bad = _variant(run_dir, tmp_path, weights=damage)
    with pytest.raises(CureZooError, match=message):
        load_model(str(bad))
    assert main(["eval", str(bad), "--attacks", "nat", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]


def test_registered_weights_are_loaded_strictly_and_fine_tuning_resets_only_the_head():
    import timm

    model = timm.create_model("st_resnet18_cifar10.autoattack", pretrained=True)
    head100 = timm.create_model("st_resnet18_cifar10.autoattack", pretrained=True, num_classes=100)
    assert head100.linear.weight.shape == (100, 512)
    assert torch.equal(model.conv1.weight, head100.conv1.weight)
    with pytest.raises(CureZooError, match="do not fit"):
        timm.create_model("st_resnet18_cifar10.autoattack", pretrained=True, widths=(32, 64, 128, 256))


# ---------------------------------------------------------------------------------------------------------
# numbers in recipes: YAML 1.2 floats and N/D fractions (item 7)


def test_set_accepts_yaml12_floats_and_fractions():
    from cure_zoo.training.recipe import load_recipe

    r = load_recipe("smoke_cure_cifar10", ["optim.lr=1e-3", "optim.weight_decay=5e-4", "attack.eps=8/255"])
    assert (r.optim.lr, r.optim.weight_decay, r.attack.eps) == (0.001, 0.0005, 8 / 255)


def test_recipe_files_accept_them_too(tmp_path):
    from cure_zoo.training.recipe import RecipeError, load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("method: at\noptim:\n  lr: 1e-3\n  weight_decay: 5E-4\nattack:\n  eps: 4/255\n")
    r = load_recipe(str(path))
    assert (r.optim.lr, r.optim.weight_decay, r.attack.eps) == (0.001, 0.0005, 4 / 255)
    for bad in ("optim.lr=8/0", "optim.lr=.nan", "optim.lr=fast", "optim.epochs=1e3"):
        with pytest.raises(RecipeError, match="optim"):
            load_recipe(str(path), [bad])


# ---------------------------------------------------------------------------------------------------------
# a leftover torchrun environment (item 9)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_world_size_without_master_addr_is_one_line(run_dir, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    assert main(["eval", str(run_dir), "--attacks", "nat", "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "WORLD_SIZE=2" in err[0] and "MASTER_ADDR" in err[0], err


def test_rendezvous_that_nobody_joins_times_out_with_a_message(run_dir, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    monkeypatch.setenv("CURE_ZOO_RENDEZVOUS_TIMEOUT", "2")
    assert main(["eval", str(run_dir), "--attacks", "nat", "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "waiting up to 2 s for 1 more process" in err and "127.0.0.1" in err
    assert "no other process joined" in err.strip().splitlines()[-1] and "unset WORLD_SIZE" in err


# ---------------------------------------------------------------------------------------------------------
# Ctrl-C during training (item 10)

TINY_TRAIN = {
    "method": "at",
    "model": {"architecture": "cifar_resnet18", "args": {"widths": [4, 8, 8, 8]}},
    "data": {"source": "bundled", "train_examples": 64},
    "optim": {"batch_size": 16, "epochs": 50, "lr": 0.05},
    "eval": {"every": 0},
    "checkpoint": {"every_steps": 1},
    "run": {"progress": False, "tensorboard": False},
}


@pytest.mark.slow
def test_ctrl_c_during_training_writes_a_checkpoint_and_exits_130(tmp_path):
    import yaml

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY_TRAIN))
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(TRAIN_PY), "--recipe", str(recipe), "--output", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "checkpoint.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "SIGINT: checkpoint written" in err and "Traceback" not in err and "KeyboardInterrupt" not in err
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] >= 1


def test_sigint_handler_stops_after_the_step_like_sigterm(tmp_path):
    """In-process: the trainer's handler for SIGINT is its SIGTERM handler (checkpoint, then stop), not
    Python's KeyboardInterrupt."""
    from cure_zoo.training import RunInterrupted, load_recipe, train
    from cure_zoo.training import trainer as trainer_module

    values = {
        "method": "st",
        "model.architecture": "cifar_resnet18",
        "model.args": {"widths": [4, 4, 4, 4]},
        "data.source": "bundled",
        "data.train_examples": 48,
        "optim.batch_size": 16,
        "optim.epochs": 3,
        "eval.every": 0,
        "checkpoint.every_steps": 0,
        "run.progress": False,
        "run.tensorboard": False,
    }
    original = trainer_module.Trainer.train_step
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under a background shell

    def step_then_ctrl_c(self, *args, **kwargs):
        if self.state.global_step == 1:
            signal.raise_signal(signal.SIGINT)
        return original(self, *args, **kwargs)

    trainer_module.Trainer.train_step = step_then_ctrl_c
    try:
        with pytest.raises(RunInterrupted, match="SIGINT: checkpoint written at epoch 1, step 2") as stop:
            train(load_recipe(None, values), tmp_path)
    finally:
        trainer_module.Trainer.train_step = original
    assert stop.value.exit_status == 130
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["global_step"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is given back


# ---------------------------------------------------------------------------------------------------------
# exit codes (item 11) and one-line errors (item 12)


def test_verify_with_an_unusable_state_dir_is_exit_2(run_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    assert main(["verify", str(run_dir), "--state-dir", str(blocker / "state"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "state-dir" in err[0], err


def test_an_oserror_reaching_the_cli_is_one_line_exit_2(capsys, monkeypatch):
    from cure_zoo.cli import cmd_list

    def full_disk(args):
        raise OSError(28, "No space left on device", "/some/out.json")

    monkeypatch.setattr(cmd_list, "run", full_disk)
    assert main(["list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cure-zoo list: error: /some/out.json: No space left on device (check the path, its permissions "
                   "and the free space)"]  # fmt: skip
