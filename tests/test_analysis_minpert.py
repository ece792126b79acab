"""Minimum L-inf perturbation per image: the bisection's bracket re-checked with independent PGD runs, FAB as
a second opinion, the censored and misclassified cases, and the figures. Tiny fitted model, real images."""

import json

import pytest
import torch

from cure_zoo.analysis.minpert import minimum_perturbation, plot_distribution, plot_examples
from cure_zoo.attacks import ce_loss, indexed_uniform_start, pgd
from cure_zoo.errors import CureZooError
from tests.tiny_models import tiny_model


def _flips(model, x, y, idx, eps, steps=10, seed=0):
    """PGD at budget eps (the bisection's probe, recomputed from the public pieces): is each image flipped?"""
    e = torch.as_tensor(eps, dtype=x.dtype).view(-1, 1, 1, 1)
    delta = indexed_uniform_start(x, 1.0, seed, idx) * e
    adv = pgd(model, x, lambda z: ce_loss(z, y), eps=e, step_size=2.5 * e / steps, steps=steps, delta=delta)
    with torch.no_grad():
        return model(adv).argmax(1) != y


def test_bisection_brackets_each_images_minimum(cifar10_test):
    model, images = tiny_model(), cifar10_test.take(12)
    r = minimum_perturbation(model, images, eps_max="8/255", iterations=6, steps=10, batch_size=5)
    x, y, idx = images.images, images.labels, images.indices
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    assert torch.equal(r.min_eps == 0, ~correct)  # misclassified images need no perturbation
    found = correct & torch.isfinite(r.min_eps)
    assert found.sum() >= 2
    # every reported perturbation flips its image, within its budget
    with torch.no_grad():
        adv_pred = model((x + r.delta).clamp(0, 1)).argmax(1)
    assert (adv_pred[found] != y[found]).all() and torch.equal(adv_pred[found], r.adv_label[found])
    linf = r.delta.flatten(1).abs().amax(1).double()
    assert (linf[found] <= r.min_eps[found] + 1e-6).all()
    # the bracket: PGD flips at min_eps and (re-run independently) not at the lower end; width = precision
    assert _flips(model, x[found], y[found], idx[found], r.min_eps[found]).all()
    assert not _flips(model, x[found], y[found], idx[found], r.lower[found].clamp(min=1e-12)).any()
    assert ((r.min_eps - r.lower)[found] <= 8 / 255 / 2**6 + 1e-12).all()
    s = r.summary()
    assert s["n_correct"] == int(correct.sum()) and s["n_flipped"] + s["n_not_flipped"] == s["n_correct"]


@pytest.mark.slow
def test_fab_gives_a_second_opinion_of_the_same_order(cifar10_test):
    model, images = tiny_model(), cifar10_test.take(8)
    fab = minimum_perturbation(model, images, method="fab", iterations=20, eps_max="16/255")
    bis = minimum_perturbation(model, images, iterations=6, steps=10, eps_max="16/255")
    both = (fab.min_eps > 0) & torch.isfinite(fab.min_eps) & torch.isfinite(bis.min_eps)
    assert both.sum() >= 2
    with torch.no_grad():
        assert (model(images.images[both] + fab.delta[both]).argmax(1) != images.labels[both]).all()
    ratio = (fab.min_eps[both] / bis.min_eps[both]).median().item()
    assert 0.25 < ratio < 4  # two different attacks, the same scale of minimal perturbation


def test_censored_images_json_and_figures(cifar10_test, tmp_path):
    model, images = tiny_model(), cifar10_test.take(6)
    tiny_budget = minimum_perturbation(model, images, eps_max=1e-5, iterations=2, steps=2)
    correct = tiny_budget.min_eps > 0
    assert correct.any() and torch.isinf(tiny_budget.min_eps[correct]).all()  # nothing flips at 1e-5
    obj = json.loads(tiny_budget.save(tmp_path / "m.json").read_text())
    assert obj["schema"] == "cure_zoo.minpert/1" and obj["summary"]["n_not_flipped"] == int(correct.sum())
    assert all(p["min_eps"] is None for p, c in zip(obj["per_image"], correct, strict=True) if c)
    assert obj["summary"]["q50"] is None  # the median is above eps_max: not hidden as a number
    r = minimum_perturbation(model, images, eps_max="8/255", iterations=3, steps=5)
    text = json.dumps(r.to_json())
    assert "Infinity" not in text and "NaN" not in text  # censored values are null: strict JSON
    for png in (plot_examples([r, r], tmp_path / "ex.png", n=3), plot_distribution([r], tmp_path / "d.png")):
        assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(CureZooError, match="unknown method 'deepfool'"):
        minimum_perturbation(model, images, method="deepfool")
