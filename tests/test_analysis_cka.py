"""Linear CKA: its defining properties on synthetic features, the minibatch estimator against the full one,
and the layer-by-layer matrix of real models on real bundled images."""

import json

import pytest
import torch

from cure_zoo.analysis import MinibatchCKA, cka_matrix, default_layers, linear_cka
from cure_zoo.analysis.cka import gram
from cure_zoo.errors import CureZooError
from tests.tiny_models import tiny_model


def _features(n=600, p=40, q=30, seed=0):
    """Two feature spaces that share a 10-d signal plus independent noise (population CKA strictly in (0, 1))."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 10, generator=g, dtype=torch.float64)
    x = z @ torch.randn(10, p, generator=g, dtype=torch.float64) + torch.randn(n, p, generator=g, dtype=torch.float64)
    y = z @ torch.randn(10, q, generator=g, dtype=torch.float64) + 2 * torch.randn(
        n, q, generator=g, dtype=torch.float64
    )
    return x, y


def _minibatch(x, y, batch):
    acc = MinibatchCKA()
    for s in range(0, len(x) - batch + 1, batch):
        acc.update(gram(x[s : s + batch])[None], gram(y[s : s + batch])[None])
    return float(acc.compute()[0, 0])


def test_cka_of_features_with_themselves_is_one_and_lies_in_0_1():
    x, y = _features()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert _minibatch(x, x, 100) == pytest.approx(1.0, abs=1e-12)
    assert 0.05 < linear_cka(x, y) < 0.95


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    x, y = _features()
    q, _ = torch.linalg.qr(
        torch.randn(x.shape[1], x.shape[1], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    )
    base = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(base, abs=1e-10)
    assert _minibatch(x @ q * 5.0, y, 100) == pytest.approx(_minibatch(x, y, 100), abs=1e-10)
    # not invariant to an arbitrary invertible linear map (the property that sets CKA apart from CCA)
    a = torch.randn(x.shape[1], x.shape[1], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert abs(linear_cka(x @ torch.diag(torch.logspace(-2, 2, x.shape[1], dtype=torch.float64)) @ a, y) - base) > 0.01


def test_minibatch_estimate_converges_to_the_full_cka():
    x, y = _features(n=2400)
    full = linear_cka(x, y)
    assert _minibatch(x, y, 2400) == pytest.approx(full, abs=3e-3)  # one batch: unbiased vs biased HSIC
    for batch in (24, 240):  # 100 and 10 minibatches: the same target, from b x b Gram matrices only
        assert _minibatch(x, y, batch) == pytest.approx(full, abs=0.015)


def test_minibatch_estimator_is_unbiased_where_averaging_per_batch_cka_is_not():
    # independent features: population CKA 0. The biased CKA of a small batch is far above 0 (about p/b);
    # the minibatch estimator built from unbiased HSIC terms is not.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4000, 64, generator=g, dtype=torch.float64)
    y = torch.randn(4000, 64, generator=g, dtype=torch.float64)
    naive = sum(linear_cka(x[s : s + 40], y[s : s + 40]) for s in range(0, 4000, 40)) / 100
    assert naive > 0.3
    assert abs(_minibatch(x, y, 40)) < 0.03


def test_default_layers_of_the_cifar_resnet():
    import timm

    model = timm.create_model("cifar_resnet18_w16")
    assert default_layers(model) == ["act1", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0",
                                     "layer3.1", "layer4.0", "layer4.1", "logits"]  # fmt: skip


def test_cka_matrix_of_real_models_on_real_images(cifar10_test, tmp_path):
    model = tiny_model()
    images = cifar10_test.take(64)
    same = cka_matrix(model, model, images, batch_size=32)
    assert same.matrix.shape == (10, 10) and same.images["n_used"] == 64 and same.estimator["batches"] == 2
    assert torch.allclose(torch.diagonal(same.matrix), torch.ones(10, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(same.matrix, same.matrix.T, atol=1e-9)
    assert (same.matrix > -0.05).all() and (same.matrix < 1 + 1e-9).all()
    # a ragged last batch of < 4 images is left out and said so
    ragged = cka_matrix(
        model, model, cifar10_test.take(66), layers_a="layer4.1,logits", layers_b="logits", batch_size=32
    )
    assert ragged.images["n_used"] == 64 and ragged.matrix.shape == (2, 1)
    # against an untrained network of the same architecture: neighbouring layers stay similar, deep ones do not
    torch.manual_seed(0)
    import timm

    other = timm.create_model("cifar_resnet18", widths=[8, 16, 32, 64]).eval()
    cross = cka_matrix(model, other, images, batch_size=32)
    assert cross.matrix[0, 0] > 0.5 > cross.matrix[-1, -1] or cross.matrix[0, 0] > cross.matrix[-1, -1]
    path = cross.save(tmp_path / "cka.json")
    obj = json.loads(path.read_text())
    assert obj["schema"] == "cure_zoo.cka/1" and len(obj["cka"]) == 10 and obj["layers_b"][-1] == "logits"
    png = cross.plot(tmp_path / "cka.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cka_against_adversarial_inputs_and_bad_layers(cifar10_test):
    model, images = tiny_model(), cifar10_test.take(16)
    adv = cka_matrix(
        model, model, images, layers_a="logits", layers_b="logits", batch_size=16, b_inputs="pgd20", eps="2/255"
    )
    assert adv.images["b_inputs"] == "pgd20" and float(adv.matrix[0, 0]) < 0.999  # the attack moved the logits
    with pytest.raises(CureZooError, match="no layer 'layer9'"):
        cka_matrix(model, model, images, layers_a="layer9")
    with pytest.raises(CureZooError, match="at least 4"):
        cka_matrix(model, model, images, batch_size=2)
