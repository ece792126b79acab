"""RobustBench leaderboard entries: the model_info fields and formats, the refusal of evaluations that are
not RobustBench's protocol, and the footnote that marks them when asked to write one anyway. The evaluation
is real (AutoAttack on the tiny model and real images); the "full test split" case relabels its dataset
block, since a 10,000-image AutoAttack cannot run in a test."""

import dataclasses
import json

import pytest

from cure_zoo.errors import CureZooError
from cure_zoo.evaluation import evaluate
from cure_zoo.evaluation.robustbench import nonstandard_reasons, robustbench_entry
from tests.tiny_models import tiny_model

FIELDS = ["link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
          "architecture", "eps", "clean_acc", "reported"]  # fmt: skip


@pytest.fixture(scope="module")
def aa_result(cifar10_test):
    return evaluate(tiny_model(), cifar10_test.take(8), "nat,aa", batch_size=8, progress=False, notify=lambda m: None)


@pytest.mark.slow
def test_a_subset_evaluation_is_refused_or_footnoted(aa_result):
    with pytest.raises(CureZooError, match="not a RobustBench evaluation: evaluated on 8 cifar10 test images"):
        robustbench_entry(aa_result)
    entry = robustbench_entry(aa_result, allow_nonstandard=True, zoo_config={"method": "cure", "model_name": "x"})
    assert list(entry)[: len(FIELDS)] == FIELDS and entry["unreliable"] is True
    assert "Not RobustBench's protocol: evaluated on 8 cifar10 test images" in entry["footnote"]
    assert entry["eps"] == "8/255" and entry["autoattack_acc"] == f"{aa_result.accuracy('aa'):.2f}"
    assert entry["clean_acc"] == f"{aa_result.accuracy('nat'):.2f}" and entry["clean_acc"].count(".") == 1
    assert entry["name"].startswith("Conserve-Update-Revise") and entry["venue"] == "ICLR 2024"
    assert entry["number_forward_passes"] == 1 and entry["additional_data"] is False
    json.dumps(entry)


@pytest.mark.slow
def test_the_full_test_split_with_standard_autoattack_is_accepted(aa_result):
    full = dataclasses.replace(
        aa_result,
        dataset=dict(aa_result.dataset, n_examples=10_000, source="torchvision CIFAR10 test split"),
        model=dict(aa_result.model, name="cure_resnet18_cifar10"),
    )
    assert nonstandard_reasons(full) == []
    entry = robustbench_entry(full, corruptions_acc=71.234)
    assert "footnote" not in entry and entry["unreliable"] is False and entry["corruptions_acc"] == "71.23"
    assert entry["architecture"] == "ResNet-18" and entry["link"] == "https://arxiv.org/abs/2401.14948"
    assert entry["reported"] == entry["autoattack_acc"]
    l2 = dataclasses.replace(
        full,
        protocol=dict(
            full.protocol,
            norm="L2",
            attacks=dict(full.protocol["attacks"], aa={**full.protocol["attacks"]["aa"], "eps": 0.5, "norm": "L2"}),
        ),  # noqa: E501
    )
    assert robustbench_entry(l2)["eps"] == "0.5"


def test_without_autoattack_there_is_no_entry(cifar10_test):
    result = evaluate(tiny_model(), cifar10_test.take(4), "nat", progress=False, notify=lambda m: None)
    assert "no AutoAttack ('aa') was run" in nonstandard_reasons(result)
    with pytest.raises(CureZooError, match="needs both 'nat' and 'aa'"):
        robustbench_entry(result, allow_nonstandard=True)
