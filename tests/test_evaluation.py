"""evaluate(): the protocol on real images, against pyautoattack called directly, and its invariances
(same seed -> same masks; batch size does not matter). Real ResNet-18 where realism matters, else the tiny
fitted model from tests/tiny_models.py."""

import pyautoattack
import pytest
import torch
import torch.nn as nn

from cure_zoo.data import ImageSet
from cure_zoo.errors import CureZooError
from cure_zoo.evaluation import EvalResult, evaluate
from cure_zoo.evaluation.autoattack import run_autoattack
from tests.tiny_models import tiny_model

QUIET = dict(progress=False, notify=lambda message: None)


def test_natural_resnet18_is_not_robust_at_8_255(autoattack_resnet18, cifar10_test):
    model = autoattack_resnet18
    model.train()  # evaluate() must switch to eval mode itself and give the training flag back
    result = evaluate(model, cifar10_test.take(8), "nat,pgd20", batch_size=8, **QUIET)
    assert model.training
    model.eval()
    nat, pgd20 = result.results["nat"], result.results["pgd20"]
    assert nat["correct"] >= 7 and nat["n"] == 8  # 93.8% on the bundled images
    assert pgd20["correct"] == 0 and pgd20["ci95"][0] == 0.0 and 0 < pgd20["ci95"][1] < 40
    assert result.results["worst"]["correct"] == 0
    p = result.protocol
    assert p["eps"] == 8 / 255 and p["dtype"] == "float32" and p["device"] == "cpu"
    assert p["attacks"]["pgd20"]["steps"] == 20 and p["attacks"]["pgd20"]["random_start"].startswith("uniform")
    assert p["attacks"]["pgd20"]["step_size"] == 0.003 and p["attacks"]["pgd20"]["loss"] == "ce"
    assert p["versions"]["pyautoattack"] == pyautoattack.__version__
    assert result.indices == list(range(8)) and result.dataset["name"] == "cifar10"


@pytest.mark.slow
def test_autoattack_equals_pyautoattack_called_directly(cifar10_test):
    """The same model, images, eps, seed and batch size through our evaluate() and through pyautoattack's
    documented API give the same per-sample result and the same adversarial images."""
    model, images = tiny_model(), cifar10_test.take(12)
    x, y = images.images, images.labels
    ours = evaluate(model, images, "nat,aa", batch_size=12, seed=5, **QUIET)

    direct = pyautoattack.AutoAttack(model, norm="Linf", eps=8 / 255, version="standard", seed=5, device="cpu")
    x_direct, y_direct = direct.run_standard_evaluation(x, y, batch_size=12)
    assert torch.equal(ours.mask("aa"), y_direct == y)
    assert 0 < ours.results["nat"]["correct"]  # something was attacked
    assert ours.results["aa"]["correct"] == int((y_direct == y).sum())

    wrapped = run_autoattack(model, x, y, eps=8 / 255, seed=5, batch_size=12, device=torch.device("cpu"))
    assert torch.equal(wrapped.x_adv, x_direct) and torch.equal(wrapped.robust, ours.mask("aa"))
    assert "apgd-ce" in wrapped.accuracy_after and ours.flags == []
    robust = int((y_direct == y).sum())  # APGD-CE broke everything it could, so AutoAttack stopped after it
    stages = ours.results["aa"]["stages"]
    assert list(stages) == ["apgd-ce"] and stages["apgd-ce"]["time_s"] >= 0  # AutoAttack's own timing
    assert {k: v for k, v in stages["apgd-ce"].items() if k != "time_s"} == {
        "correct": robust,
        "accuracy": 100 * robust / 12,
    }


class _Noisy(nn.Module):
    """A randomised 'defence' (noise on the logits even in eval mode): AutoAttack's own check must fire."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + 0.01 * torch.randn(len(x), 10)


@pytest.mark.slow
def test_autoattack_checks_are_surfaced_as_flags(cifar10_test):
    # AutoAttack runs its checks before attacking; images the model gets wrong leave nothing to attack after
    # them, which keeps this test cheap
    model, images = _Noisy(tiny_model()), cifar10_test.take(24)
    with torch.no_grad():
        wrong = torch.nonzero(model(images.images).argmax(1) != images.labels).flatten()[:4]
    subset = ImageSet(images.images[wrong], images.labels[wrong], images.indices[wrong], "cifar10", "test", "s")
    result = evaluate(model, subset, "aa", batch_size=4, **QUIET)
    assert any("randomized defense" in f for f in result.flags)
    assert result.to_json()["flags"] == result.flags


def test_a_model_returning_probabilities_is_refused(cifar10_test):
    model = nn.Sequential(tiny_model(), nn.Softmax(dim=1))
    with pytest.raises(CureZooError, match="probabilities.*logits"):
        evaluate(model, cifar10_test.take(4), "nat,pgd20", **QUIET)


def test_same_seed_same_masks_and_batch_size_does_not_matter(cifar10_test):
    model, images = tiny_model(), cifar10_test.take(24)
    args = dict(eps="1/255", seed=3, **QUIET)
    a = evaluate(model, images, "nat,pgd20,cw20", batch_size=24, **args)
    b = evaluate(model, images, "nat,pgd20", batch_size=24, **args)
    c = evaluate(model, images, "nat,pgd20,cw20", batch_size=7, **args)  # 7 does not divide 24: ragged last batch
    same_seed = a.differing_samples(b)
    assert same_seed["nat"] == same_seed["pgd20"] == 0
    assert a.differing_samples(c) == {k: 0 for k in a.masks}
    nat, pgd20 = a.mask("nat"), a.mask("pgd20")
    assert 0 < int((nat & pgd20).sum()) < int(nat.sum())  # some correct images break, some survive
    assert torch.equal(a.mask("worst"), nat & pgd20 & a.mask("cw20"))
    assert a.results["nrr_cw"] == pytest.approx(
        2 * a.accuracy("nat") * a.accuracy("cw20") / (a.accuracy("nat") + a.accuracy("cw20"))
    )


@pytest.mark.slow
def test_memory_format_changes_speed_not_results_and_the_model_is_given_back(autoattack_resnet18, cifar10_test):
    """channels_last (the CPU default) and NCHW give the same per-sample outcomes on the real ResNet-18; the
    layout is recorded, and the model's own tensors (storage and strides) are put back afterwards."""
    model, images = autoattack_resnet18, cifar10_test.take(16)
    before = {n: (t.data_ptr(), t.stride()) for n, t in model.state_dict().items()}
    args = dict(eps="1/255", batch_size=16, **QUIET)
    auto = evaluate(model, images, "nat,pgd20", **args)
    nchw = evaluate(model, images, "nat,pgd20", memory_format="contiguous", **args)
    assert auto.protocol["memory_format"] == "channels_last" and nchw.protocol["memory_format"] == "contiguous_format"
    assert auto.differing_samples(nchw) == {k: 0 for k in auto.masks}
    assert 0 < auto.results["pgd20"]["correct"] < auto.results["nat"]["correct"]  # a mix, so the check means something
    assert {n: (t.data_ptr(), t.stride()) for n, t in model.state_dict().items()} == before
    with pytest.raises(CureZooError, match="unknown memory format 'nhwc'; use one of auto, channels_last"):
        evaluate(model, images, "nat", memory_format="nhwc", **QUIET)


def test_result_json_round_trip_keeps_everything(tmp_path, cifar10_test):
    result = evaluate(tiny_model(), cifar10_test.take(6), "nat,pgd20@2/255", batch_size=6, **QUIET)
    back = EvalResult.load(result.save(tmp_path / "eval.json"))
    assert back.to_json() == result.to_json()
    assert set(back.masks) == {"nat", "pgd20@2/255", "worst"} and "pgd20@2/255" in back.format_table()


def test_dataset_by_name_announces_the_bundled_fallback_once(capsys):
    notices = []
    result = evaluate(tiny_model(), "cifar10", "nat", n_examples=5, progress=False, notify=notices.append)
    assert len(notices) == 1 and "first 1,017 images" in notices[0] and "test indices 0-4" in notices[0]
    assert result.dataset["source"].startswith("bundled real cifar10 test subset")
    with pytest.raises(CureZooError, match="only 1017"):
        evaluate(tiny_model(), "cifar10", "nat", n_examples=2000, **QUIET)
    with pytest.raises(CureZooError, match="no svhn images ship"):
        evaluate(tiny_model(), "svhn", "nat", **QUIET)


def test_concat_of_chunks_equals_one_run(cifar10_test):
    model, images = tiny_model(), cifar10_test.take(10)
    args = dict(eps="1/255", batch_size=10, **QUIET)
    whole = evaluate(model, images, "nat,pgd20", **args)
    chunks = [
        ImageSet(images.images[a:b], images.labels[a:b], images.indices[a:b], "cifar10", "test", images.source)
        for a, b in [(0, 4), (4, 10)]
    ]
    merged = EvalResult.concat([evaluate(model, chunk, "nat,pgd20", **args) for chunk in chunks])
    assert merged.indices == whole.indices and merged.differing_samples(whole) == {k: 0 for k in whole.masks}
    for name in ("nat", "pgd20", "worst"):
        assert {k: v for k, v in merged.results[name].items() if k != "time_s"} == {
            k: v for k, v in whole.results[name].items() if k != "time_s"
        }
    assert merged.protocol["chunks"] == [4, 6]


def test_tf32_choice_is_applied_recorded_and_given_back(cifar10_test):
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    precision = torch.get_float32_matmul_precision()
    images = cifar10_test.take(4)
    on = evaluate(tiny_model(), images, "nat", batch_size=4, allow_tf32=True, **QUIET).protocol["numerics"]
    off = evaluate(tiny_model(), images, "nat", batch_size=4, allow_tf32=False, **QUIET).protocol["numerics"]
    kept = evaluate(tiny_model(), images, "nat", batch_size=4, **QUIET).protocol["numerics"]
    assert on["cudnn_allow_tf32"] and on["matmul_allow_tf32"] and on["float32_matmul_precision"] == "high"
    assert not off["cudnn_allow_tf32"] and not off["matmul_allow_tf32"]
    assert off["float32_matmul_precision"] == "highest"
    assert (kept["cudnn_allow_tf32"], kept["matmul_allow_tf32"]) == before  # None: the process's own settings
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before
    assert torch.get_float32_matmul_precision() == precision
