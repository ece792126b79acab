"""``benchmarks/gpu_check.py --tiny`` runs every section end to end on the CPU, so the device check cannot rot
before a GPU is lent. Tiny models and few steps; about two minutes on one free core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_tiny_runs_every_section_on_the_cpu(tmp_path):
    out = tmp_path / "check.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.is_file(), done.stderr[-2000:]
    report = json.loads(out.read_text())
    errors = {k: v["error"] for k, v in report["sections"].items() if "error" in v}
    assert done.returncode == 0 and not errors, (errors, done.stderr[-2000:])
    sections = report["sections"]
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
