"""Ablations and sensitivity (paper App. C.3, Table 7; App. F, Table 10): CURE without RGP and/or the revision
stage (``cure.rgp``, ``cure.revise``), recorded in config.json; ``cure-zoo train --sweep KEY=V1,V2`` trains one
run directory per value and writes a summary of their last evaluated epochs; a malformed sweep is one line and
exit status 2, before anything is trained."""

from __future__ import annotations

import contextlib
import copy
import json

import pytest
import timm
import torch

import cure_zoo  # noqa: F401
from cure_zoo.cli.main import main
from cure_zoo.training import load_recipe
from cure_zoo.training.methods import Batch, StepContext, build_method

TINY = {"model.architecture": "cifar_resnet18", "model.args": {"widths": [4, 8, 8, 8]}, "attack.steps": 2}
CTX = StepContext(epoch=1, autocast=contextlib.nullcontext, reduce_=lambda tensors: None)
# the smoke recipe cut to one CURE epoch of one step on a few images
SMOKE = [
    "method=cure", "optim.epochs=1", "optim.milestones=[1]", "data.train_examples=32", "optim.batch_size=32",
    "model.args={widths: [4, 8, 8, 8]}", "attack.steps=1", "eval.examples=8", "eval.pgd_steps=1",
    "checkpoint.every_steps=0", "run.progress=false", "run.tensorboard=false",
]  # fmt: skip


def _stepped(values: dict, batch: Batch, model: torch.nn.Module):
    method = build_method(load_recipe(None, {**TINY, **values}), model)
    method.prepare()
    method.on_epoch_start(1)
    stats = method.step(batch, CTX)
    return method, stats


def test_without_both_components_cure_is_trades_with_its_beta(batch):
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet18", widths=(4, 8, 8, 8)).train()
    twin = copy.deepcopy(model)
    off = {"method": "cure", "cure.rgp": False, "cure.revise": False, "cure.beta": 2.0}
    cure, stats = _stepped(off, batch, model)
    assert cure.revision is None and cure.mask_counts() is None
    assert set(stats) == {"loss", "ce_nat", "kl", "ce_adv", "adv_acc"}  # no L_CR, no mask
    assert cure.after_step(1) == {} and cure.state_dict() == {"revision": None}
    _, trades_stats = _stepped({"method": "trades", "trades.beta": 2.0}, batch, twin)
    assert torch.equal(stats["loss"], trades_stats["loss"])
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad), name


def test_each_switch_removes_only_its_component(batch):
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet18", widths=(4, 8, 8, 8)).train()
    no_rgp, stats = _stepped({"method": "cure", "cure.rgp": False}, batch, copy.deepcopy(model))
    assert no_rgp.revision is not None and "l_cr" in stats and "masked_frac" not in stats
    assert no_rgp.after_step(1)["revision_rate"] == 0.2
    no_rev, stats = _stepped({"method": "cure", "cure.revise": False}, batch, copy.deepcopy(model))
    assert no_rev.revision is None and "l_cr" not in stats
    assert float(stats["masked_frac"]) == pytest.approx(0.30, abs=0.01)
    eff = load_recipe(None, {**TINY, "method": "cure_eff", "optim.epochs": 3, "cure.natural_warmup_epochs": 1,
                             "cure.revise": False})  # fmt: skip
    m = build_method(eff, model)
    m.prepare()
    m.on_epoch_start(2)
    assert m.revision is None


def test_ablation_run_records_its_switches_in_config_json(tmp_path):
    args = ["--recipe", "smoke_cure_cifar10", *[a for s in SMOKE for a in ("--set", s)]]
    out = tmp_path / "run"
    assert main(["train", *args, "--set", "cure.rgp=false", "--set", "cure.revise=false", "--output", str(out)]) == 0
    block = json.loads((out / "config.json").read_text())["cure_zoo"]
    assert (block["recipe"]["cure"]["rgp"], block["recipe"]["cure"]["revise"]) == (False, False)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert not {"l_cr", "masked_frac", "revised"} & set(metrics[0]["train"])


def test_sweep_trains_one_run_per_value_and_summarises_them(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["train", "--recipe", "smoke_cure_cifar10", *[a for s in SMOKE for a in ("--set", s)]]
    args += ["--sweep", "cure.p=10,20", "--sweep", "cure.alpha=0.5", "--output", str(out)]
    assert main(args) == 0
    dirs = ["cure.p=10", "cure.p=20", "cure.alpha=0.5"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*dirs, "sweep_summary.json", "sweep_summary.md"])
    for name, (key, value) in zip(dirs, [("p", 10.0), ("p", 20.0), ("alpha", 0.5)], strict=True):
        recipe = json.loads((out / name / "config.json").read_text())["cure_zoo"]["recipe"]
        assert recipe["cure"][key] == value and (out / name / "model.safetensors").is_file()
        other = {"p": 30.0, "alpha": 0.1}
        other.pop(key)
        assert all(recipe["cure"][k] == v for k, v in other.items())  # one key at a time
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["recipe"] == "smoke_cure_cifar10" and summary["runs_planned"] == 3
    rows = summary["runs"]
    assert [(r["key"], r["value"], r["run_dir"]) for r in rows] == [
        ("cure.p", 10, "cure.p=10"), ("cure.p", 20, "cure.p=20"), ("cure.alpha", 0.5, "cure.alpha=0.5")
    ]  # fmt: skip
    last = [json.loads(line) for line in (out / "cure.p=20" / "metrics.jsonl").read_text().splitlines()][-1]
    assert rows[1]["eval_epoch"] == 1 and rows[1]["eval"] == last["eval"]
    md = (out / "sweep_summary.md").read_text()
    assert "| key | value | epoch | nat_acc | pgd1_acc | run |" in md
    assert f"| `cure.p` | 20 | 1 | {last['eval']['nat_acc']:.2f} | {last['eval']['pgd1_acc']:.2f} | cure.p=20 |" in md
    # again: the finished runs are left as they are and the summary is the same
    before = (out / "cure.p=10" / "model.safetensors").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "cure.p=10" / "model.safetensors").stat().st_mtime_ns == before
    assert json.loads((out / "sweep_summary.json").read_text()) == summary
    capsys.readouterr()
    assert main(["train", "--recipe", "smoke_cure_cifar10", *args[3:-2], "--print", "--output", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{out / 'cure.p=10'}: cure.p = 10"


@pytest.mark.parametrize(
    ("sweep", "extra", "message"),
    [
        ("cure.p", [], r"--sweep expects KEY=V1,V2,\.\.\. \(e\.g\. cure\.p=10,20,30\), got 'cure\.p'"),
        ("cure.p=", [], r"--sweep expects KEY=V1,V2"),
        ("=1,2", [], r"--sweep expects KEY=V1,V2"),
        ("cure.p=10,,20", [], r"--sweep cure\.p: an empty value in '10,,20'"),
        ("cure.p=10,10.0", [], r"--sweep cure\.p: the value '10\.0' is given twice"),
        ("cure.p=[10,20]", [], r"not lists"),
        ("cure.q=1,2", [], r"unknown recipe key 'cure\.q'; did you mean 'cure\.p'"),
        ("cure.p=10,200", [], r"recipe key 'cure\.p' must be a percentage in \[0, 100\), got 200"),
        ("cure.alpha=low", [], r"recipe key 'cure\.alpha' must be a number, got 'low'"),
        ("cure.p=10,20", ["--set", "cure.p=5"], r"--sweep cure\.p and --set cure\.p both set it"),
        ("cure.p=10", ["--sweep", "cure.p=20"], r"--sweep cure\.p is given twice"),
    ],
)
def test_bad_sweeps_are_one_line_and_status_2_before_training(tmp_path, capsys, sweep, extra, message):
    import re

    out = tmp_path / "sweep"
    code = main(["train", "--recipe", "smoke_cure_cifar10", "--sweep", sweep, *extra, "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("cure-zoo train: error: ")
    assert re.search(message, err), err
    assert not out.exists()
