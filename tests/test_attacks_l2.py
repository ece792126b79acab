"""The L2 threat model: PGD and the CW margin on L2 balls against torchattacks' PGDL2, the per-image start in
the ball, AutoAttack norm='L2' against pyautoattack called directly, and the protocol that records the norm.
Real AutoAttack ResNet-18 and real bundled CIFAR-10 images where realism matters, else the tiny fitted model."""

import pyautoattack
import pytest
import torch
import torchattacks

from cure_zoo.attacks import ce_loss, cw_margin_loss, indexed_l2_start, pgd
from cure_zoo.errors import CureZooError
from cure_zoo.evaluation import evaluate, parse_attacks
from cure_zoo.evaluation.autoattack import run_autoattack
from tests.tiny_models import tiny_model

QUIET = dict(progress=False, notify=lambda message: None)


def _torchattacks_l2_start(x, eps):
    """torchattacks' PGDL2 start, clamp(x + r * eps * n / ||n||, 0, 1) - x, from the global RNG as it draws it."""
    delta = torch.empty_like(x).normal_()
    n = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    r = torch.zeros_like(n).uniform_(0, 1)
    return (x + delta * r / n * eps).clamp(0, 1) - x


def test_l2_pgd_equals_torchattacks_pgdl2_given_the_same_start(cifar10_test):
    """Our L2 PGD vs torchattacks.PGDL2 (an implementation nobody here wrote) on 16 real images at L2 eps 0.1,
    where some images survive and some do not, given torchattacks' own start (ours takes the start as given).
    In float64 they agree to 1e-9; in float32 the continuous L2 steps amplify rounding (torchattacks averages
    the loss, we sum it), measured up to 5e-4 per pixel on the real ResNet-18, so the check is in float64."""
    model, eps, alpha, steps = tiny_model().double(), 0.1, 0.025, 5
    x, y = cifar10_test.images[:16].double(), cifar10_test.labels[:16]
    torch.manual_seed(7)
    x_ta = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    torch.manual_seed(7)
    start = _torchattacks_l2_start(x, eps)
    x_ours = pgd(model, x, lambda z: ce_loss(z, y), eps=eps, step_size=alpha, steps=steps, delta=start, norm="L2")
    assert x_ta.dtype == torch.float64 and (x_ours - x_ta).abs().max() < 1e-9
    with torch.no_grad():
        nat, robust = model(x).argmax(1) == y, model(x_ours).argmax(1) == y
    assert 0 < robust.sum() < nat.sum()  # a mix of outcomes, so the comparison means something
    assert (x_ours - x).flatten(1).norm(dim=1).max() <= eps + 1e-9 and 0 <= x_ours.min() and x_ours.max() <= 1
    # ...and an L-inf run of the same loop is a different attack
    x_inf = pgd(model, x, lambda z: ce_loss(z, y), eps=eps, step_size=alpha, steps=steps, delta=start)
    assert (x_inf - x_ours).abs().max() > 1e-3


def test_l2_start_is_uniform_in_the_ball_per_image():
    x = torch.zeros(400, 3, 8, 8)
    idx = torch.arange(1000, 1400)
    d = indexed_l2_start(x, 0.5, seed=1, indices=idx)
    norms = d.flatten(1).norm(dim=1)
    assert norms.max() <= 0.5 + 1e-6 and norms.min() > 0.45  # in 192 dimensions nearly all volume is near the sphere
    # the radius is eps * u^(1/d): P(norm <= 0.5 * t) = t^d; check the median, t = 0.5^(1/192)
    assert abs(norms.median().item() - 0.5 * 0.5 ** (1 / 192)) < 2e-3
    direction = d.flatten(1) / norms[:, None]
    assert direction.mean(0).abs().max() < 4 / 400**0.5 / 192**0.5 * 3  # isotropic: no preferred direction
    assert d.min() < 0 < d.max()  # not clamped to [0, 1] (x is at its lower edge)
    assert torch.equal(indexed_l2_start(x[150:], 0.5, seed=1, indices=idx[150:]), d[150:])  # per image


def test_l2_protocol_names_steps_and_eps():
    specs = {s.name: s for s in parse_attacks("nat,pgd20,cw20,aa,pgd100@1", norm="L2")}
    assert specs["pgd20"].eps == 0.5 and specs["pgd20"].norm == "L2" and specs["pgd20"].step_size == 2.5 * 0.5 / 20
    assert specs["pgd100@1"].step_size == 2.5 * 1 / 100 and specs["cw20"].loss == "cw"
    assert specs["aa"].describe(0)["norm"] == "L2" and specs["pgd20"].describe(0)["norm"] == "L2"
    assert [s.name for s in parse_attacks("sweep", norm="l2")] == ["pgd20@0.125", "pgd20@0.25", "pgd20", "pgd20@1"]
    assert parse_attacks("pgd20@8/255")[0].norm == "Linf"
    with pytest.raises(CureZooError, match="unknown norm 'L1'"):
        parse_attacks("pgd20", norm="L1")


def test_l2_evaluate_records_the_norm_and_cw_is_no_weaker_than_nothing(cifar10_test):
    model, images = tiny_model(), cifar10_test.take(16)
    result = evaluate(model, images, "nat,pgd20,cw20", norm="L2", eps=0.1, batch_size=16, **QUIET)
    p = result.protocol
    assert p["norm"] == "L2" and p["eps"] == 0.1 and p["attacks"]["cw20"]["norm"] == "L2"
    nat, pgd20, cw20 = (result.results[k]["correct"] for k in ("nat", "pgd20", "cw20"))
    assert pgd20 < nat and cw20 < nat and "0.1" in result.format_table()
    # the margin loss PGD (CW-L2) is the zoo's one loop with another loss: recomputed here by hand
    x, y = images.images, images.labels
    delta = indexed_l2_start(x, 0.1, 0, images.indices)
    adv = pgd(model, x, lambda z: cw_margin_loss(z, y, 50.0), eps=0.1, step_size=2.5 * 0.1 / 20, steps=20,
              delta=delta, norm="L2")  # fmt: skip
    with torch.no_grad():
        assert torch.equal(model(adv).argmax(1) == y, result.mask("cw20"))
    default = evaluate(model, images.take(4), "nat", norm="L2", **QUIET)
    assert default.protocol["eps"] == 0.5


@pytest.mark.slow
def test_l2_autoattack_equals_pyautoattack_called_directly(cifar10_test):
    """AutoAttack norm='L2' through our wrapper and through pyautoattack's documented API: the same per-sample
    result and the same adversarial images, inside the L2 ball."""
    model, eps = tiny_model(), 0.05
    x, y = cifar10_test.images[:8], cifar10_test.labels[:8]
    ours = run_autoattack(model, x, y, eps=eps, norm="L2", seed=5, batch_size=8, device=torch.device("cpu"))
    direct = pyautoattack.AutoAttack(model, norm="L2", eps=eps, version="standard", seed=5, device="cpu")
    x_direct, y_direct = direct.run_standard_evaluation(x, y, batch_size=8)
    assert torch.equal(ours.x_adv, x_direct) and torch.equal(ours.robust, y_direct == y)
    assert (ours.x_adv - x).flatten(1).norm(dim=1).max() <= eps + 1e-5 and ours.flags == []
    with torch.no_grad():
        nat = model(x).argmax(1) == y
    assert 0 < int(ours.robust.sum()) < int(nat.sum())  # some broken, some not: the comparison means something
