"""Whole training runs on the bundled real CIFAR-10 training images with tiny models: the run directory they
write, resumption after SIGTERM and SIGKILL (bitwise equal to an uninterrupted run), NaN handling, recipe
changes on resume, 2-process gloo runs (ranks identical; equal to a 1-process run on the same global batch;
a worker killed under ``torchrun --max-restarts`` and resumed by torchrun's restart), and the GPU options
bf16 autocast and channels_last run on CPU."""

from __future__ import annotations

import json
import math
import os
import re
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
from cure_zoo.rundir import CHECKPOINT_FILE
from cure_zoo.training import TrainingDivergedError, load_recipe, train
from tests import training_worker  # noqa: F401  (registers the test architectures, float64_resnet among them)

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


@pytest.mark.slow
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


@pytest.mark.slow
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
    _assert_same_end(reference_run, out)


def _assert_same_end(reference: Path, out: Path) -> None:
    """The run in ``out`` ended exactly where the uninterrupted ``reference`` run did: model, revision model,
    step count, per-epoch losses and evaluations, bit for bit."""
    ref, got = _weights(reference), _weights(out)
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    ref_ckpt = torch.load(reference / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    got_ckpt = torch.load(out / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert got_ckpt["global_step"] == ref_ckpt["global_step"]
    for k, v in ref_ckpt["method"]["revision"]["module"].items():
        assert torch.equal(v, got_ckpt["method"]["revision"]["module"][k]), k
    ref_metrics = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    got_metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for r, g in zip(ref_metrics, got_metrics, strict=True):
        assert (r.get("eval"), r["train"]) == (g.get("eval"), g["train"])


@pytest.mark.slow
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


# 6 steps (2 epochs of 3), a checkpoint after each: long enough to kill a worker mid-run
TWO_PROCESS = {"method": "cure", **TINY, "optim.epochs": 2, "optim.milestones": [2], "eval.every": 0}


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> tuple[Path, dict[str, dict[str, torch.Tensor]]]:
    """An uninterrupted 2-process gloo CURE run (BatchNorm, attack, masks, revision): its directory and each
    rank's final model and revision model."""
    out = tmp_path_factory.mktemp("two_process")
    return out, _run_worker(out, TWO_PROCESS, 2)


@pytest.mark.slow
def test_two_process_gloo_run_keeps_all_ranks_identical(two_process_run):
    """Every tensor, BN running statistics and the revision model included, is the same on both processes, and
    the run's output is rank 0's model."""
    out, ranks = two_process_run
    assert ranks["rank0"].keys() == ranks["rank1"].keys()
    assert any(k.startswith("revision.") and k.endswith("running_mean") for k in ranks["rank0"])
    for k, v in ranks["rank0"].items():
        assert torch.equal(v, ranks["rank1"][k]), k
    for k, v in load_file(str(out / "model.safetensors")).items():
        assert torch.equal(v, ranks["rank0"][f"model.{k}"]), k


@pytest.mark.slow
def test_two_process_gloo_run_matches_one_process_on_the_same_global_batch(tmp_path):
    """Full CURE (PGD attack, RGP masks, L_CR, revision with r = 1) split over 2 processes or not gives the
    same weights, on a model without batch statistics (GroupNorm) computing in float64.

    Why float64 (measured on this recipe, 3 steps): in float32 x_adv is identical at step 1, but the all-reduced
    gradient rounds differently from a one-process sum (~1e-7) and PGD steps by sign(grad), so at step 2
    11,755 of the 98,304 x_adv entries (7 of 32 images) differ, at step 3 50,633 (all 32 images), by up to
    2 eps; RGP masks, cut at a percentile, flip the same way. The final float32 weights then differ by up to
    5.6e-3, while forgetting the gradient all-reduce gives 1.9e-2 and attack.eps 7/255 instead of 8/255
    1.3e-2: no float32 tolerance separates right from wrong with a safe margin. In float64 x_adv is identical
    at every step and the weights (and revision model) agree to 2.2e-16, while each of these mistakes moves
    them by >= 2.8e-3:
    no gradient all-reduce 1.9e-2; RGP scores from the local instead of the all-reduced gradients 1.05e-2;
    attack.eps 0.0313 instead of 8/255 (0.2% smaller) 2.3e-2; 9 PGD steps instead of 10 1.5e-2; one x_adv
    entry moved by one step (2/255) at step 2 2.8e-3. atol 1e-12 is 4 orders above the rounding and 9 below
    the smallest of these."""
    values = {
        "method": "cure",
        **TINY,
        "model.architecture": "float64_resnet",
        "model.args": {"widths": [8, 16, 16, 16], "groupnorm": True},
        "cure.revision_rate": 1.0,
        "checkpoint.every_steps": 0,
        "optim.epochs": 1,
        "eval.every": 0,
    }
    single = _run_worker(tmp_path / "one", values, 1)["rank0"]
    double = _run_worker(tmp_path / "two", values, 2)
    assert any(k.startswith("revision.") for k in single)
    for k, v in double["rank0"].items():
        assert torch.equal(v, double["rank1"][k]), k
        if v.is_floating_point():
            assert v.dtype == torch.float64, k
        torch.testing.assert_close(v, single[k], rtol=0, atol=1e-12, msg=k)


def _worker_pids(launcher: int) -> dict[int, int]:
    """{rank: pid} of the workers a torchrun process started (its children), read from /proc."""
    workers = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (proc / "environ").read_bytes().split(b"\0") if parent == launcher else []
        except (OSError, IndexError, ValueError):  # exited meanwhile
            continue
        for var in environ:
            if var.startswith(b"RANK="):
                workers[int(var[5:])] = int(proc.name)
    return workers


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds torchrun's workers through Linux /proc")
def test_torchrun_max_restarts_resumes_a_killed_worker_group_bitwise(two_process_run, tmp_path):
    """``torchrun --max-restarts=1`` end to end: rank 0 is SIGKILLed after a step checkpoint; torchrun stops
    rank 1, starts a new worker group, which resumes from the checkpoint by itself and ends with the same bits
    (model, revision model, per-epoch losses) as the uninterrupted 2-process run of the same recipe."""
    reference, _ = two_process_run
    out = tmp_path / "run"
    recipe = _recipe_file(TWO_PROCESS, tmp_path / "tiny_cure.yaml")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=1"]
    cmd = [*launch, str(TRAIN_PY), "--recipe", str(recipe), "--output", str(out)]
    log, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(log, "w") as stdout, open(err, "w") as stderr:
        # its own session: if the test fails midway, killing the group leaves no orphaned worker behind
        proc = subprocess.Popen(cmd, env=_env(), stdout=stdout, stderr=stderr, start_new_session=True)
    try:
        start = time.time()
        while not (out / CHECKPOINT_FILE).is_file():
            assert proc.poll() is None and time.time() - start < 240, err.read_text()[-3000:]
            time.sleep(0.05)
        workers = _worker_pids(proc.pid)
        assert sorted(workers) == [0, 1], workers
        os.kill(workers[0], signal.SIGKILL)
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err.read_text()[-3000:]
    resumed = re.findall(r"resumed \S+ at epoch \d+, step \d+ \(global step (\d+)\)", log.read_text())
    assert len(resumed) == 1 and 1 <= int(resumed[0]) < 6, log.read_text()
    _assert_same_end(reference, out)


# -- GPU options, run on CPU ---------------------------------------------------------------------------------

ONE_STEP = {"method": "cure", **TINY, "data.train_examples": 32, "checkpoint.every_steps": 0}


@pytest.fixture(scope="module")
def float32_first_step(tmp_path_factory) -> dict[str, float]:
    """The losses of a float32 CURE run's first step (an epoch of one step)."""
    result = train(load_recipe(None, {**ONE_STEP, "optim.epochs": 1, "eval.every": 0}), tmp_path_factory.mktemp("f32"))
    return result.metrics[0]["train"]


def test_bf16_autocast_run_on_cpu(float32_first_step, tmp_path):
    """``run.amp=bf16``: CURE steps and the per-epoch PGD check under bf16 autocast give finite losses and a
    loadable run directory with float32 weights. bf16 is really used: the first step's clean CE (same weights,
    same images as the float32 run) is off by bf16 rounding (measured 4.5e-4; two float32 runs, contiguous and
    channels_last, agree to 2e-6), yet close."""
    values = {**ONE_STEP, "optim.epochs": 2, "optim.milestones": [2], "run.amp": "bf16"}
    result = train(load_recipe(None, values), tmp_path)
    assert [m["epoch"] for m in result.metrics] == [1, 2]
    for m in result.metrics:
        assert all(math.isfinite(v) for v in m["train"].values()), m["train"]
        assert {"nat_acc", "pgd2_acc"} <= set(m["eval"])
    assert 2e-5 < abs(result.metrics[0]["train"]["ce_nat"] - float32_first_step["ce_nat"]) < 2e-2
    loaded = load_model(str(tmp_path))
    assert all(v.dtype == torch.float32 for v in loaded.model.state_dict().values() if v.is_floating_point())
    assert json.loads((tmp_path / "config.json").read_text())["cure_zoo"]["recipe"]["run"]["amp"] == "bf16"


# At least 8 channels into every convolution: torch 2.14.1's oneDNN CPU kernel for the weight gradient of a
# channels_last 1x1 stride-2 convolution with fewer than 8 input channels corrupts the heap (segfault at one
# thread, a hang at two; reproduced with a lone Conv2d(4, 8, 1, stride=2)). Real models have 16 or more.
CHANNELS_LAST_ARGS = {"widths": [8, 8, 8, 8]}


@pytest.mark.slow
def test_channels_last_run_equals_contiguous_run(tmp_path):
    """``model.channels_last``: model, training batches and evaluation images in NHWC give the contiguous run's
    result. A whole run (3 CURE steps, eval) is compared in float64, to 1e-12 (measured 9e-15): in float32 the
    two layouts' convolutions round differently (first-step clean CE 2.323187 vs 2.323185), which flips PGD
    sign steps and RGP mask entries, so float32 runs drift apart (max weight difference 6.7e-2 after 3 steps),
    and only the first step's clean CE can be compared there (rtol 1e-5)."""
    values = {**TINY, "method": "cure", "model.architecture": "float64_resnet", "optim.epochs": 1}
    values["model.args"] = CHANNELS_LAST_ARGS
    values["checkpoint.every_steps"] = 0
    contiguous = train(load_recipe(None, values), tmp_path / "contiguous")
    nhwc = train(load_recipe(None, {**values, "model.channels_last": True}), tmp_path / "nhwc")
    ckpt = torch.load(tmp_path / "nhwc" / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert ckpt["model"]["conv1.weight"].is_contiguous(memory_format=torch.channels_last)
    assert not ckpt["model"]["conv1.weight"].is_contiguous()
    a, b = _weights(tmp_path / "contiguous"), _weights(tmp_path / "nhwc")
    for k in a:
        assert a[k].dtype == torch.float64 or not a[k].is_floating_point(), k
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-12, msg=k)
    assert nhwc.metrics[0]["eval"] == contiguous.metrics[0]["eval"]
    for k, v in contiguous.metrics[0]["train"].items():
        assert nhwc.metrics[0]["train"][k] == pytest.approx(v, rel=1e-12, abs=1e-12), k
    one_step = {**ONE_STEP, "model.args": CHANNELS_LAST_ARGS, "optim.epochs": 1, "eval.every": 0}
    first = train(load_recipe(None, one_step), tmp_path / "f32")
    first_nhwc = train(load_recipe(None, {**one_step, "model.channels_last": True}), tmp_path / "f32_nhwc")
    assert first_nhwc.metrics[0]["train"]["ce_nat"] == pytest.approx(first.metrics[0]["train"]["ce_nat"], rel=1e-5)
