"""``model.compile=true`` (inductor, on the CPU) through CURE-Eff's switch from natural training to CURE.

CURE takes three backward passes over one graph (``retain_graph=True``). A compiled graph whose backward was
first run with a single backward pass (CURE-Eff's natural warm-up) has AOTAutograd's donated buffers, and
its backward then refuses ``retain_graph`` ("compiled with non-empty donated buffers"): the first CURE step
after the switch failed. ``compile_model`` switches donated buffers off. Compiling costs most of this test's
time (tens of seconds, cold)."""

import contextlib
import functools

import pytest
import torch

from cure_zoo.data import load_bundled
from cure_zoo.training import train
from cure_zoo.training.methods import Batch, StepContext, build_method
from cure_zoo.training.modeling import build_model, compile_model
from cure_zoo.training.recipe import load_recipe


def _warmup_then_cure(compiled: bool, x: torch.Tensor, y: torch.Tensor) -> tuple[dict, dict, torch.nn.Module]:
    recipe = load_recipe(
        None,
        {
            "method": "cure_eff",
            "model.args": {"widths": [4, 8, 8, 8]},
            "optim.epochs": 2,
            "cure.natural_warmup_epochs": 1,
            "run.seed": 0,
        },
    )
    model = build_model(recipe)
    method = build_method(recipe, model, compile_model(model) if compiled else model)
    method.prepare()

    def noise(kind: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return (torch.randn if kind == "normal" else torch.rand)(x.shape, generator=g)

    stats = []
    for epoch in (1, 2):  # epoch 1: natural warm-up; epoch 2: the first CURE step
        method.on_epoch_start(epoch)
        model.zero_grad(set_to_none=True)
        ctx = StepContext(epoch=epoch, autocast=contextlib.nullcontext, reduce_=lambda tensors: None)
        stats.append(method.step(Batch(x, y, 1.0, noise), ctx))
    return stats[0], stats[1], model


@pytest.mark.slow
@pytest.mark.skipif(
    torch.__version__.startswith("2.14."),
    reason="torch 2.14's inductor CPU kernels abort the process (Fatal Python error: Aborted) in this compiled "
    "CURE backward, with or without a dynamic batch and with a fresh cache; it passed on the previous torch",
)
def test_compiled_cure_eff_switches_to_cure_and_gives_eager_losses():
    data = load_bundled("cifar10", "train", n=8)
    natural, cure, model = _warmup_then_cure(True, data.images, data.labels)
    eager_natural, eager_cure, _ = _warmup_then_cure(False, data.images, data.labels)
    assert "l_cr" not in natural and "l_cr" in cure  # the switch happened
    for key in ("loss", "ce_nat", "kl", "l_cr", "ce_adv", "masked_frac"):
        assert torch.isfinite(cure[key]), key
    # the clean branch does not go through the attack's sign steps, so it agrees up to float rounding
    torch.testing.assert_close(natural["loss"], eager_natural["loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cure["ce_nat"], eager_cure["ce_nat"], rtol=1e-4, atol=1e-5)
    assert abs(cure["masked_frac"].item() - 0.30) < 0.01  # p = 30% of every masked tensor's entries
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.slow
def test_compiled_cure_epoch_stays_within_three_graphs(monkeypatch, tmp_path):
    """A compiled CURE epoch with a partial last batch and the per-epoch check compiles at most three graphs
    (train mode; the attack's eval mode with frozen parameters; the same without gradients) and no frame
    falls back to eager. Before the batch dimension was marked dynamic and the check moved to the eager
    module it hit dynamo's recompile limit (8) within the first epoch. The ``eager`` backend keeps this to
    dynamo's tracing (the graphs and guards are the same as inductor's); about a minute on one CPU thread."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from cure_zoo.training import trainer

    monkeypatch.setattr(trainer, "compile_model", functools.partial(compile_model, backend="eager"))
    values = {
        "method": "cure",
        "model.args": {"widths": [4, 8, 8, 8]},
        "data.source": "bundled",
        # batches of 24 and 16 (on the CPU a batch below 16 adds graphs: the convolution backend choice, which
        # dynamo guards on, switches there)
        "data.train_examples": 40,
        "optim.batch_size": 24,
        "optim.epochs": 1,
        "attack.steps": 1,
        "eval.examples": 6,  # check batches of 4 and 2
        "eval.batch_size": 4,
        "eval.pgd_steps": 1,
        "model.compile": True,
        "checkpoint.every_steps": 0,
        "run.progress": False,
        "run.tensorboard": False,
    }
    torch._dynamo.reset()
    counters.clear()
    result = train(load_recipe(None, values), tmp_path)
    assert result.global_step == 2 and "eval" in result.metrics[0]
    assert 1 <= counters["stats"]["unique_graphs"] <= 3, dict(counters["stats"])
    assert counters["frames"]["total"] == counters["frames"]["ok"], dict(counters["frames"])
