"""Whole training runs on the bundled real CIFAR-10 training images with tiny models: the run directory they
write, resumption after SIGTERM and SIGKILL (bitwise equal to an uninterrupted run), NaN handling, recipe
changes on resume, and a 2-process gloo run against a 1-process run on the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file

import cure_zoo  # noqa: F401
from cure_zoo.errors import CureZooError
from cure_zoo.models.loader import load_model
from cure_zoo.training import TrainingDivergedError, load_recipe, train
from cure_zoo.training.checkpoint import CHECKPOINT_FILE
from tests.training_threads import one_thread  # noqa: F401  (autouse)

REPO = Path(__file__).resolve().parents[1]
TRAIN_PY = REPO / "recipes" / "train.py"
WORKER = Path(__file__).with_name("training_worker.py")

TINY = {
    "model.architecture": "cifar_resnet18",
    "model.args": {"widths": [4, 8, 8, 8]},
    "data.source": "bundled",
    "data.train_examples": 96,
    "optim.batch_size": 32,
    "optim.lr": 0.05,
    "eval.examples": 16,
    "eval.pgd_steps": 2,
    "checkpoint.every_steps": 1,
    "run.progress": False,
    "run.tensorboard": False,
}


def _recipe_file(values: dict, path: Path) -> Path:
    """Write dotted recipe keys as a nested recipe YAML file."""
    nested: dict = {}
    for key, value in values.items():
        section, _, sub = key.rpartition(".")
        (nested.setdefault(section, {}) if section else nested)[sub] = value
    path.write_text(yaml.safe_dump(nested))
    return path


def _env() -> dict[str, str]:
    # one thread: CPU kernels then reduce in one fixed order, so separate processes compute identical bits
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")


@pytest.fixture(scope="module")
def st_run(tmp_path_factory) -> Path:
    """A tiny naturally trained model (CURE's starting point), trained in this process."""
    out = tmp_path_factory.mktemp("st_run")
    train(load_recipe(None, {"method": "st", **TINY, "optim.epochs": 1, "eval.every": 0}), out)
    return out


@pytest.fixture(scope="module")
def cure_values(st_run) -> dict:
    return {"method": "cure", **TINY, "model.init": str(st_run), "optim.epochs": 2, "optim.milestones": [2]}


@pytest.fixture(scope="module")
def reference_run(cure_values, tmp_path_factory) -> Path:
    """An uninterrupted CURE run, in a subprocess like the interrupted ones (same threads, same bits)."""
    out = tmp_path_factory.mktemp("reference")
    recipe = _recipe_file(cure_values, out.parent / "tiny_cure.yaml")
    cmd = [sys.executable, str(TRAIN_PY), "--recipe", str(recipe), "--output", str(out)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_run_directory_is_loadable_and_complete(reference_run, st_run):
    files = {p.name for p in reference_run.iterdir()}
    assert {"model.safetensors", "config.json", "train_hparams.yaml", "metrics.jsonl", CHECKPOINT_FILE} <= files
    config = json.loads((reference_run / "config.json").read_text())
    block = config["cure_zoo"]
    assert config["architecture"] == "cifar_resnet18" and config["model_args"]["widths"] == [4, 8, 8, 8]
    assert block["method"] == "cure" and block["dataset"] == "cifar10" and block["preset"] == "paper"
    assert block["recipe"]["cure"]["beta"] == 1.0 and block["recipe"]["optim"]["weight_decay"] == 5e-3
    assert block["init"]["spec"] == str(st_run) and len(block["init"]["sha256"]) == 64
    assert {"torch", "timm", "cure_zoo"} <= set(block["versions"]) and block["code_revision"]
    loaded = load_model(str(reference_run))
    assert loaded.weights_sha256 == block["weights_sha256"]
    via_timm = timm.create_model(
        "cifar_resnet18",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(reference_run / "model.safetensors")),
        widths=(4, 8, 8, 8),
    )
    for k, v in via_timm.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k])
    hparams = yaml.safe_load((reference_run / "train_hparams.yaml").read_text())
    assert hparams == block["recipe"]
    metrics = [json.loads(line) for line in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all({"nat_acc", "pgd2_acc"} <= set(m["eval"]) for m in metrics)
    assert metrics[0]["train"]["l_cr"] >= 0 and 0.29 <= metrics[0]["train"]["masked_frac"] <= 0.31
    assert block["training"]["best_eval"]["epoch"] in (1, 2)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def _wait_for_checkpoint(out: Path, proc: subprocess.Popen, done: callable, timeout: float = 240) -> dict:
    start = time.time()
    while time.time() - start < timeout:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        path = out / CHECKPOINT_FILE
        if path.is_file():
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            if done(ckpt):
                return ckpt
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


def test_sigterm_and_sigkill_mid_epoch_then_resume_is_bitwise_identical(cure_values, reference_run, tmp_path):
    out = tmp_path / "interrupted"
    recipe = _recipe_file(cure_values, tmp_path / "tiny_cure.yaml")
    cmd = [sys.executable, str(TRAIN_PY), "--recipe", str(recipe), "--output", str(out)]
    # 1. SIGTERM in the middle of epoch 1: a checkpoint is written and the process exits with 143
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(out, proc, lambda c: c["epochs_done"] == 0 and c["step_in_epoch"] >= 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "SIGTERM: checkpoint written" in err and "Traceback" not in err
    assert not (out / "model.safetensors").exists()
    # 2. resume, then SIGKILL in the middle of epoch 2 (no chance to save anything)
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(out, proc, lambda c: c["epochs_done"] == 1 and c["step_in_epoch"] >= 1)
    proc.kill()
    proc.wait(timeout=60)
    assert not (out / "model.safetensors").exists()
    # 3. resume to the end: the same bits as the uninterrupted run
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed" in done.stdout
    ref, got = _weights(reference_run), _weights(out)
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    ref_ckpt = torch.load(reference_run / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    got_ckpt = torch.load(out / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    for k, v in ref_ckpt["method"]["revision"]["module"].items():
        assert torch.equal(v, got_ckpt["method"]["revision"]["module"][k]), k
    ref_metrics = [json.loads(x) for x in (reference_run / "metrics.jsonl").read_text().splitlines()]
    got_metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for r, g in zip(ref_metrics, got_metrics, strict=True):
        assert (r["eval"], r["train"]) == (g["eval"], g["train"])


def test_resuming_with_a_different_recipe_is_refused(cure_values, reference_run, tmp_path):
    out = tmp_path / "copy"
    out.mkdir()
    (out / CHECKPOINT_FILE).write_bytes((reference_run / CHECKPOINT_FILE).read_bytes())
    with pytest.raises(CureZooError, match=r"optim\.lr"):
        train(load_recipe(None, {**cure_values, "optim.lr": 0.2}), out)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    values = {"method": "st", **TINY, "optim.epochs": 1, "optim.lr": 1e30, "eval.every": 0}
    with pytest.raises(TrainingDivergedError, match=r"loss became (nan|inf).*epoch 1, step \d.*last good checkpoint"):
        train(load_recipe(None, values), tmp_path)
    ckpt = torch.load(tmp_path / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] >= 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (tmp_path / "model.safetensors").exists()


def _run_worker(out: Path, values: dict, processes: int) -> dict[str, dict[str, torch.Tensor]]:
    sets = [f"{k}={json.dumps(v)}" for k, v in values.items()]
    launch = [sys.executable]
    if processes > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    done = subprocess.run(
        [*launch, str(WORKER), str(out), *sets], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {f"rank{r}": load_file(str(out / f"rank{r}.safetensors")) for r in range(processes)}


def test_two_process_gloo_run_keeps_all_ranks_identical(tmp_path):
    """Full CURE (attack, masks, revision) with BatchNorm: every tensor, BN running statistics and the revision
    model included, is the same on both processes, and the run's output is rank 0's model."""
    values = {"method": "cure", **TINY, "data.train_examples": 64, "optim.epochs": 1, "eval.every": 0}
    ranks = _run_worker(tmp_path, values, 2)
    assert ranks["rank0"].keys() == ranks["rank1"].keys()
    assert any(k.startswith("revision.") and k.endswith("running_mean") for k in ranks["rank0"])
    for k, v in ranks["rank0"].items():
        assert torch.equal(v, ranks["rank1"][k]), k
    for k, v in load_file(str(tmp_path / "model.safetensors")).items():
        assert torch.equal(v, ranks["rank0"][f"model.{k}"]), k


def test_two_process_gloo_run_matches_one_process_on_the_same_global_batch(tmp_path):
    """CURE on a model without batch statistics (GroupNorm), split over 2 processes or not: the same weights
    up to float rounding. The training attack is switched off (eps 0, so x_adv = x exactly) because PGD steps
    by sign(grad): input-gradient entries near 0 change sign with the batch-size-dependent rounding of the
    convolutions, which moves x_adv by a whole step; everything else (data split, per-objective gradient
    all-reduce, RGP masks on the reduced gradients, L_CR, revision, SGD) is compared."""
    values = {
        "method": "cure",
        **TINY,
        "model.architecture": "tiny_groupnorm_resnet",
        "model.args": {"widths": [8, 16, 16, 16]},
        "attack.eps": 0.0,
        "cure.revision_rate": 1.0,
        "optim.epochs": 1,
        "eval.every": 0,
    }
    single = _run_worker(tmp_path / "one", values, 1)["rank0"]
    double = _run_worker(tmp_path / "two", values, 2)
    for k, v in double["rank0"].items():
        assert torch.equal(v, double["rank1"][k]), k
        torch.testing.assert_close(v, single[k], rtol=1e-5, atol=1e-6)
