"""The one PGD loop, its losses and its per-image random starts, checked against independent references:
torchattacks' PGD on the real AutoAttack ResNet-18 and real CIFAR-10 images, hand-computed CW margins and
gradients, and the batching/sharding invariance the counter-based starts promise."""

import pytest
import torch
import torchattacks

from cure_zoo.attacks import ce_loss, counter_uniform, cw_margin_loss, indexed_uniform_start, pgd
from cure_zoo.attacks.counter_rng import hash32


def test_counter_uniform_is_a_function_of_seed_index_and_element():
    idx = torch.arange(100, 300)
    u = counter_uniform(7, idx, (3, 4, 4))
    assert u.shape == (200, 3, 4, 4) and u.dtype == torch.float32
    assert 0 <= u.min() and u.max() < 1
    # any subset, order or split of the images gets exactly the same numbers
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    assert torch.equal(counter_uniform(7, idx[perm], (3, 4, 4)), u[perm])
    assert torch.equal(counter_uniform(7, idx[150:], (3, 4, 4)), u[150:])
    # another seed (or image) gives unrelated numbers
    assert (counter_uniform(8, idx, (3, 4, 4)) == u).float().mean() < 1e-3
    assert (u[0] == u[1]).float().mean() < 1e-3


def test_counter_uniform_looks_uniform_and_uncorrelated():
    u = counter_uniform(0, torch.arange(2000), (3, 32, 32)).flatten(1)  # 6.1M numbers
    n = u.numel()
    assert abs(u.mean().item() - 0.5) < 5 * (1 / 12 / n) ** 0.5  # 5-sigma bounds
    assert abs(u.var().item() - 1 / 12) < 1e-3
    hist = torch.histc(u, bins=64, min=0, max=1)
    expected = n / 64
    chi2 = (((hist - expected) ** 2) / expected).sum().item()
    assert chi2 < 130  # chi-square with 63 dof: p < 1e-6 above ~130
    for a, b in [(u[:, :-1], u[:, 1:]), (u[:-1], u[1:])]:  # neighbouring elements, neighbouring images
        assert abs(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()) < 3e-3


def test_hash32_matches_a_reference_implementation_in_python_integers():
    def lowbias32(x):  # Chris Wellons' published constants, in unbounded Python ints
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    xs = [0, 1, 2, 12345, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xDEADBEEF]
    assert hash32(torch.tensor(xs, dtype=torch.int64)).tolist() == [lowbias32(x) for x in xs]


def test_indexed_start_is_inside_the_ball_and_not_clamped():
    x = torch.zeros(4, 3, 8, 8)  # at the lower edge of [0, 1]: a clamped start would be >= 0
    d = indexed_uniform_start(x, 0.1, seed=0, indices=torch.arange(4))
    assert d.abs().max() <= 0.1 and d.min() < -0.09 and d.max() > 0.09


def test_cw_margin_loss_value_and_gradient_by_hand():
    logits = torch.tensor([[2.0, 5.0, 1.0], [9.0, 1.0, 3.0], [0.0, 80.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 0, 0])
    loss = cw_margin_loss(logits, y, confidence=50)
    # -(z_y - max_{k!=y} z_k + 50), clamped at 0 from below inside: 2-5+50 = 47; 9-3+50 = 56; 0-80+50 < 0 -> 0
    assert loss.tolist() == [-47.0, -56.0, 0.0]
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    # d/dz_y = -1, d/dz_{best other} = +1, else 0; a clamped sample gets no gradient
    assert grad.tolist() == [[-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert cw_margin_loss(logits, y, confidence=0).tolist() == [0.0, -6.0, 0.0]


def test_cw_margin_loss_gradient_through_a_model_matches_torch_func(autoattack_resnet18, cifar10_test):
    # input gradient of the summed loss through the real model: autograd (what PGD uses) vs torch.func.grad
    model, x, y = autoattack_resnet18, cifar10_test.images[:2], cifar10_test.labels[:2]
    x_req = x.clone().requires_grad_(True)
    (g_autograd,) = torch.autograd.grad(cw_margin_loss(model(x_req), y).sum(), x_req)
    g_func = torch.func.grad(
        lambda inp: cw_margin_loss(
            torch.func.functional_call(model, dict(model.named_parameters()) | dict(model.named_buffers()), (inp,)), y
        ).sum()
    )(x)  # noqa: E501
    assert torch.allclose(g_autograd, g_func, atol=1e-6)
    assert g_autograd.abs().sum() > 0


def test_pgd_equals_torchattacks_given_the_same_start(autoattack_resnet18, cifar10_test):
    """Our PGD vs torchattacks.PGD (an implementation nobody here wrote) on the real ResNet-18 and 16 real
    images at 1/255, where some images survive and some do not. torchattacks clamps its random start to
    [0, 1]; ours takes the start as given, so we give it torchattacks' own clamped start."""
    model, eps, alpha, steps = autoattack_resnet18, 1 / 255, 0.5 / 255, 5
    x, y = cifar10_test.images[:16], cifar10_test.labels[:16]
    torch.manual_seed(123)
    x_ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
    torch.manual_seed(123)  # torchattacks draws: adv = clamp(x + U(-eps, eps), 0, 1)
    start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1) - x
    x_ours = pgd(model, x, lambda z: ce_loss(z, y), eps=eps, step_size=alpha, steps=steps, delta=start)
    assert (x_ours - x_ta).abs().max() < 1e-6
    with torch.no_grad():
        ok_ours, ok_ta = model(x_ours).argmax(1) == y, model(x_ta).argmax(1) == y
    assert torch.equal(ok_ours, ok_ta)
    assert 0 < ok_ours.sum() < ok_ours.numel()  # a mix of outcomes, so the comparison means something
    assert (x_ours - x).abs().max() <= eps + 1e-7 and 0 <= x_ours.min() and x_ours.max() <= 1


def test_pgd_result_does_not_depend_on_batch_split():
    from tests.tiny_models import tiny_model

    model, eps = tiny_model(), 2 / 255
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(12) % 10
    idx = torch.arange(500, 512)

    def attack(sl):
        delta = indexed_uniform_start(x[sl], eps, seed=3, indices=idx[sl])
        return pgd(model, x[sl], lambda z: ce_loss(z, y[sl]), eps=eps, step_size=0.003, steps=5, delta=delta)

    whole = attack(slice(0, 12))
    parts = torch.cat([attack(slice(0, 5)), attack(slice(5, 7)), attack(slice(7, 12))])
    assert torch.allclose(whole, parts, atol=1e-6)


def test_pgd_leaves_parameter_gradients_untouched():
    from tests.tiny_models import tiny_model

    model = tiny_model()
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([1, 2])
    pgd(model, x, lambda z: ce_loss(z, y), eps=0.03, step_size=0.01, steps=2)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_pgd_stays_in_the_budget_and_image_range(loss):
    from tests.tiny_models import tiny_model

    model = tiny_model()
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    x[0] = 0.0
    x[1] = 1.0  # images at the edges of [0, 1]
    y = torch.arange(6)
    fn = (lambda z: ce_loss(z, y)) if loss == "ce" else (lambda z: cw_margin_loss(z, y))
    delta = indexed_uniform_start(x, 8 / 255, seed=0, indices=torch.arange(6))
    adv = pgd(model, x, fn, eps=8 / 255, step_size=0.003, steps=3, delta=delta)
    assert (adv - x).abs().max() <= 8 / 255 + 1e-7 and adv.min() >= 0 and adv.max() <= 1
