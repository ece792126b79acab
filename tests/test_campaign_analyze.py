"""The CIFAR-10-5k campaign's ``analyze`` stage on a copy of one shipped model (8 images): the real
``cure-zoo analyze cka DIR DIR --b-inputs pgd20`` in a child process, its cka.json copied into the folder as
the card's analysis, skipped once there."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from cure_zoo.rundir import CKA_ANALYSIS_FILE, read_cka_analysis

ROOT = Path(__file__).resolve().parents[1]
MODEL = "st_resnet18_w16_cifar10_5k"


@pytest.fixture
def campaign(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("campaign", ROOT / "benchmarks" / "cifar10_5k" / "campaign.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "campaign", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "LOG", tmp_path / "campaign.jsonl")  # never the real campaign's log
    return module


@pytest.mark.slow
def test_the_analyze_stage_writes_the_cards_cka_and_skips_it_after(campaign, tmp_path):
    bundled = tmp_path / "bundled"
    shutil.copytree(ROOT / "cure_zoo" / "models" / "bundled" / MODEL, bundled / MODEL)
    (bundled / MODEL / CKA_ANALYSIS_FILE).unlink(missing_ok=True)  # the shipped model has one already
    args = ["--stage", "analyze", "--only", "st", "--bundled-dir", str(bundled), "--runs-dir", str(tmp_path / "runs")]
    assert campaign.main([*args, "--cka-n-examples", "8"]) == 0
    data, _ = read_cka_analysis(bundled / MODEL)
    assert data["images"]["n_used"] == 8 and data["images"]["b_inputs"] == "pgd20"
    assert not (bundled / MODEL / "cka.json").exists()
    events = [json.loads(line)["event"] for line in (tmp_path / "campaign.jsonl").read_text().splitlines()]
    assert events == ["analyze-start", "analyzed"]
    before = (bundled / MODEL / CKA_ANALYSIS_FILE).read_bytes()
    assert campaign.main([*args, "--cka-n-examples", "8"]) == 0  # already there: nothing runs
    assert (bundled / MODEL / CKA_ANALYSIS_FILE).read_bytes() == before
    assert len((tmp_path / "campaign.jsonl").read_text().splitlines()) == 2
