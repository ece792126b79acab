"""Gradient statistics during training (paper Sec. 5, Fig. 6 and 10; recipe key ``run.grad_stats_every``): the
share of entries CURE's step updates is its RGP mask's, the would-pass share of a method without the mask is
computed with the same threshold, records appear at the interval in metrics.jsonl, turning them on changes
nothing else, they are off by default, and the card and ``cure-zoo analyze grad-stats`` draw them."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import timm
import torch

import cure_zoo  # noqa: F401
from cure_zoo.analysis.gradstats import grad_stats_records, phases, plot_grad_stats
from cure_zoo.cli.main import main
from cure_zoo.training import load_recipe, train
from cure_zoo.training.grad_stats import gradient_statistics
from cure_zoo.training.methods import StepContext, build_method
from cure_zoo.training.rgp import masked_parameter_names

TINY = {
    "model.architecture": "cifar_resnet18",
    "model.args": {"widths": [4, 8, 8, 8]},
    "data.source": "bundled",
    "data.train_examples": 64,
    "optim.batch_size": 32,
    "optim.lr": 0.05,
    "optim.epochs": 1,
    "attack.steps": 2,
    "eval.examples": 8,
    "eval.pgd_steps": 1,
    "checkpoint.every_steps": 0,
    "run.progress": False,
    "run.tensorboard": False,
}
CTX = StepContext(epoch=1, autocast=contextlib.nullcontext, reduce_=lambda tensors: None)


def _method(method: str, **overrides):
    recipe = load_recipe(None, {"method": method, **TINY, **overrides})
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet18", widths=(4, 8, 8, 8)).train()
    m = build_method(recipe, model)
    m.prepare()
    m.on_epoch_start(1)
    return recipe, model, m


def _numpy_pass_pct(score: np.ndarray, p: float) -> float:
    """The share the mask keeps, computed independently: entries not strictly below np.percentile."""
    return 100.0 * float((score >= np.percentile(score, p)).mean())


def test_cure_updated_share_is_the_rgp_mask(batch, monkeypatch):
    recipe, model, method = _method("cure")
    from cure_zoo.training.methods import cure as cure_module

    seen = {}
    real = cure_module.apply_rgp_masks_

    def spy(grads, g_nat, g_other, **kw):  # the scores the step masks with, copied before they are consumed
        a = kw["alpha"]
        seen["scores"] = [(a * gn.abs() + (1 - a) * go.abs()).numpy() for gn, go in zip(g_nat, g_other, strict=True)]
        return real(grads, g_nat, g_other, **kw)

    monkeypatch.setattr(cure_module, "apply_rgp_masks_", spy)
    method.step(batch, CTX)
    names, zeroed = method.mask_counts()
    assert names == masked_parameter_names(model, "rgp")
    stats = gradient_statistics(model, method.mask_counts(), masking="rgp", p=recipe.cure.p)
    assert stats["kind"] == "updated" and stats["p"] == 30.0
    tensors = stats["tensors"]
    assert list(tensors) == [n for n, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    for name, score in zip(names, seen["scores"], strict=True):
        expected = _numpy_pass_pct(score, recipe.cure.p)
        # the float32 score is rounded differently from this float64 recomputation: one entry either way
        assert tensors[name]["updated_pct"] == pytest.approx(expected, abs=100.0 / score.size + 1e-9), name
        # the zeroed entries are zero in the gradient the optimizer gets
        assert int((params[name].grad == 0).sum()) >= int(zeroed[names.index(name)])
    for name in ("linear.weight", "linear.bias"):  # the classifier is never masked
        assert tensors[name]["updated_pct"] == 100.0
    for name, w in params.items():
        assert tensors[name]["grad_abs_mean"] == pytest.approx(float(w.grad.abs().mean()), rel=1e-6)


def test_st_would_pass_share_uses_the_same_threshold(batch):
    recipe, model, method = _method("st")
    method.step(batch, CTX)
    assert method.mask_counts() is None
    stats = gradient_statistics(model, None, masking=recipe.cure.masking, p=recipe.cure.p)
    assert stats["kind"] == "would_pass"
    covered = set(masked_parameter_names(model, "rgp"))
    for name, w in model.named_parameters():
        got = stats["tensors"][name]["would_pass_pct"]
        if name in covered:
            assert got == pytest.approx(_numpy_pass_pct(w.grad.abs().numpy(), 30.0), abs=1e-9), name
        else:
            assert got == 100.0
    # at another p, and with official masking's tensors (block conv1 only)
    stats = gradient_statistics(model, None, masking="rgp_soft", p=50.0)
    soft = set(masked_parameter_names(model, "rgp_soft"))
    for name, w in model.named_parameters():
        want = _numpy_pass_pct(w.grad.abs().numpy(), 50.0) if name in soft else 100.0
        assert stats["tensors"][name]["would_pass_pct"] == pytest.approx(want, abs=1e-9)


def test_cure_without_rgp_logs_the_would_pass_share(batch):
    recipe, model, method = _method("cure", **{"cure.rgp": False})
    stats = method.step(batch, CTX)
    assert "masked_frac" not in stats and method.mask_counts() is None
    logged = gradient_statistics(model, method.mask_counts(), masking=recipe.cure.masking, p=recipe.cure.p)
    assert logged["kind"] == "would_pass"


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("train_time_s", "grad_stats")} for r in records]


def test_records_at_the_interval_change_nothing_else_and_are_off_by_default(tmp_path):
    base = {"method": "cure", **TINY, "data.train_examples": 96}  # 3 steps
    off = train(load_recipe(None, base), tmp_path / "off")
    on = train(load_recipe(None, {**base, "run.grad_stats_every": 2}), tmp_path / "on")
    lines = [json.loads(s) for s in (tmp_path / "off" / "metrics.jsonl").read_text().splitlines()]
    assert all("grad_stats" not in r for r in lines + off.metrics)
    assert set(lines[0]) == {"epoch", "global_step", "lr", "train", "train_time_s", "eval", "best"}
    stats = on.metrics[0]["grad_stats"]
    assert [(g["global_step"], g["epoch"], g["kind"]) for g in stats] == [(2, 1, "updated")]
    assert _strip(on.metrics) == _strip(off.metrics)  # same losses, same evaluation: the statistics only read
    a = torch.load(tmp_path / "off" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "on" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_st_run_logs_would_pass_and_the_cli_and_card_figure_draw_it(tmp_path, capsys):
    run = tmp_path / "st"
    result = train(load_recipe(None, {"method": "st", **TINY, "run.grad_stats_every": 1}), run)
    stats = grad_stats_records(result.metrics)
    assert [g["global_step"] for g in stats] == [1, 2] and {g["kind"] for g in stats} == {"would_pass"}
    assert list(phases(stats)) == ["early", "late"]
    assert plot_grad_stats(stats, tmp_path / "card.png", "st").stat().st_size > 1000
    assert main(["analyze", "grad-stats", str(run), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"grad_stats_0.json", "grad_stats_0.png", "grad_magnitude.png"}
    table = json.loads((out / "grad_stats_0.json").read_text())
    assert table["records"] == 2 and table["phases"]["late"]["global_step"] == 2
    capsys.readouterr()
    off = tmp_path / "off"
    train(load_recipe(None, {"method": "st", **TINY, "eval.every": 0}), off)
    assert main(["analyze", "grad-stats", str(off), "--out", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run.grad_stats_every" in err and not (tmp_path / "out2").exists()


@pytest.mark.parametrize("line", ["[1, 2]", '{"epoch": 1, "grad_stats": [{"kind": "other"}]}', "{not json"])
def test_grad_stats_cli_refuses_a_damaged_metrics_file_in_one_line(tmp_path, capsys, line):
    (tmp_path / "metrics.jsonl").write_text(line + "\n")
    assert main(["analyze", "grad-stats", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics.jsonl" in err and not (tmp_path / "out").exists()


def test_records_before_a_mid_epoch_stop_survive_the_resumption(tmp_path, monkeypatch):
    from cure_zoo.training import RunInterrupted
    from cure_zoo.training.trainer import Trainer

    values = {"method": "st", **TINY, "data.train_examples": 96, "eval.every": 0, "run.grad_stats_every": 1}
    whole = train(load_recipe(None, values), tmp_path / "whole")
    original = Trainer.train_step

    def stop_at_step_2(self, epoch, epoch_idx, step, ctx):
        self.state.stop_requested = step == 1  # the stop flag rides on the step's all-reduce: stop after step 2
        return original(self, epoch, epoch_idx, step, ctx)

    monkeypatch.setattr(Trainer, "train_step", stop_at_step_2)
    with pytest.raises(RunInterrupted):
        train(load_recipe(None, values), tmp_path / "cut")
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = train(load_recipe(None, values), tmp_path / "cut")
    assert resumed.resumed
    steps = [g["global_step"] for g in resumed.metrics[0]["grad_stats"]]
    assert steps == [1, 2, 3]
    assert resumed.metrics[0]["grad_stats"] == whole.metrics[0]["grad_stats"]
