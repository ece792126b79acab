"""``benchmarks/gpu_check.py --tiny`` runs every section end to end on the CPU, so the device check cannot rot
before a GPU is lent. Tiny models and few steps; about two minutes on one free core."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECK = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py")]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.mark.slow
def test_gpu_check_tiny_runs_every_section_on_the_cpu(tmp_path):
    out = tmp_path / "check.json"
    cmd = CHECK + ["--tiny", "--device", "cpu", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=ENV)
    assert out.is_file(), done.stderr[-2000:]
    report = json.loads(out.read_text())
    errors = {k: v["error"] for k, v in report["sections"].items() if "error" in v}
    assert done.returncode == 0 and not errors, (errors, done.stderr[-2000:])
    sections = report["sections"]
    assert report["finished"]
    assert set(sections) == {"environment", "sync_debug", "masks", "steps", "smoke", "eval", "autoattack", "compile"}
    assert all(r["bit_equal_to_numpy"]["sort"] for r in sections["masks"].values() if isinstance(r, dict))
    smoke = sections["smoke"]
    assert smoke["ok"] and smoke["resumed"] and smoke["model_written"], smoke
    assert smoke["first_run"]["sigterm_sent"] and smoke["first_run"]["returncode"] == 143
    assert sections["compile"]["unique_graphs"] <= 3
    step_runs = [r for r in sections["steps"].values() if isinstance(r, dict)]
    assert len(step_runs) == 2  # ResNet-18 fp32, and bf16 + channels_last
    for r in step_runs:  # CURE timed against its floor in the same rounds
        assert r["cure_over_floor"]["ci95"][0] <= r["cure_over_floor"]["median"] <= r["cure_over_floor"]["ci95"][1]
    # PGD-20's starts are per image, so batch size and layout change outcomes only through convolution
    # rounding near a decision boundary: at most an image or two of 16, never a misaligned mask
    assert len(sections["eval"]["runs"]) == 4 and all(
        max(r["images_differing_from_first"].values()) <= 2 for r in sections["eval"]["runs"].values()
    )
    assert (out.with_suffix(".md")).read_text().startswith("# Device check (tiny, cpu)")


def test_a_run_killed_mid_check_keeps_the_sections_it_finished(tmp_path):
    """The device's time limit kills the check outright: the report written after each section survives it."""
    out = tmp_path / "check.json"
    cmd = CHECK + ["--tiny", "--device", "cpu", "--sections", "environment,steps", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 300  # the Markdown is written second, after the JSON
    while not out.with_suffix(".md").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # during ``steps``, which takes several seconds even tiny
    _, err = proc.communicate(timeout=60)
    report = json.loads(out.read_text())  # whole, never half-written
    assert list(report["sections"]) == ["environment"] and not report["finished"], err[-2000:]
    assert "unfinished" in out.with_suffix(".md").read_text().splitlines()[0]


def test_an_unknown_section_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "check.json"
    done = subprocess.run(
        CHECK + ["--tiny", "--sections", "environment,stpes", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=ENV,
    )  # fmt: skip
    assert done.returncode == 2 and "unknown section stpes: choose from environment," in done.stderr
    assert not out.exists()


def test_the_full_sizes_fit_the_bundled_test_images():
    """A device has no network: the full (not ``--tiny``) evaluations must fit the bundled CIFAR-10 test subset,
    or the eval and AutoAttack sections fail there at once (as they did at 2,000 images)."""
    probe = (
        "import json, os, gpu_check\n"
        "from cure_zoo.data.testsets import DATA_ENV, load_testset\n"
        "os.environ.pop(DATA_ENV, None)  # the bundled images, as on the device\n"
        "sizes = [gpu_check.EVAL_IMAGES[False], gpu_check.AUTOATTACK_IMAGES[False]]\n"
        "loaded = [len(load_testset('cifar10', n=n, download=False, notify=None)) for n in sizes]\n"
        "print(json.dumps([sizes, loaded]))\n"
    )
    env = dict(ENV, PYTHONPATH=os.pathsep.join([str(REPO / "benchmarks"), str(REPO)]))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    sizes, loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded == sizes


def test_without_pyautoattacks_example_model_the_eval_uses_the_bundled_natural_model(tmp_path):
    """The device kit carries pyautoattack's code without its 45 MB example model (the tree's limit): the eval
    section then runs on the bundled natural 5k ResNet-18, and says so."""
    import importlib.util

    installed = Path(importlib.util.find_spec("pyautoattack").submodule_search_locations[0])
    site = tmp_path / "site"
    shutil.copytree(installed, site / "pyautoattack", ignore=shutil.ignore_patterns("*.pt", "*.h5", "__pycache__"))
    out = tmp_path / "check.json"
    env = dict(ENV, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), CURE_ZOO_CACHE=str(tmp_path / "cache"))
    done = subprocess.run(
        CHECK + ["--tiny", "--device", "cpu", "--sections", "eval", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    section = json.loads(out.read_text())["sections"]["eval"]
    assert done.returncode == 0 and "error" not in section, (section.get("error"), done.stderr[-2000:])
    assert section["model"] == "st_resnet18_w16_cifar10_5k" and len(section["runs"]) == 4
