"""Metrics, protocol parsing and the result JSON: pure functions, checked against hand computations."""

import math

import pytest
import torch

from cure_zoo.errors import CureZooError
from cure_zoo.evaluation import EvalResult, nrr, parse_attacks, parse_eps, wilson_interval, worst_case
from cure_zoo.evaluation.autoattack import STANDARD_ATTACKS
from cure_zoo.evaluation.metrics import stage_summary, summarise
from cure_zoo.evaluation.result import decode_mask, encode_mask, indices_to_ranges, ranges_to_indices


def test_wilson_interval_bounds_solve_the_score_equation():
    # The Wilson interval is the set of p with |p_hat - p| <= z * sqrt(p (1 - p) / n): both bounds must solve
    # (p_hat - p)^2 = z^2 p (1 - p) / n (an independent characterisation, not the closed form it is coded as).
    z = 1.959963984540054
    for k, n in [(52, 100), (1, 30), (937, 1000), (5, 7)]:
        for bound in wilson_interval(k, n):
            p = bound / 100
            assert (k / n - p) ** 2 == pytest.approx(z * z * p * (1 - p) / n, rel=1e-9)
        lo, hi = wilson_interval(k, n)
        assert lo < 100 * k / n < hi


def test_wilson_interval_at_the_edges_stays_in_range():
    lo, hi = wilson_interval(0, 200)
    assert lo == 0.0 and hi == pytest.approx(100 * 1.959963984540054**2 / (200 + 1.959963984540054**2))
    lo, hi = wilson_interval(50, 50)
    assert hi == 100.0 and 90 < lo < 100
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_nrr_is_the_harmonic_mean_and_reproduces_the_paper_table_1():
    # CURE ResNet-18 CIFAR-10, reported in the paper: Nat 86.76, CW 52.48, NRR printed as 65.04 -- the formula
    # gives 65.40 (a transposition typo in the paper).
    assert nrr(86.76, 52.48) == pytest.approx(65.40, abs=0.005)
    assert nrr(50, 50) == 50 and nrr(0, 0) == 0 and nrr(100, 0) == 0


def test_worst_case_is_the_per_sample_and():
    a = torch.tensor([True, True, False, True])
    b = torch.tensor([True, False, True, True])
    assert worst_case([a, b]).tolist() == [True, False, False, True]
    assert worst_case([a]).tolist() == a.tolist()


@pytest.mark.parametrize("text,expected", [("8/255", 8 / 255), ("0.031", 0.031), ("0.25/255", 0.25 / 255), (0.5, 0.5)])
def test_eps_parsing(text, expected):
    assert parse_eps(text) == pytest.approx(expected)


@pytest.mark.parametrize("text,match", [("8", "did you mean 8/255"), ("0", "positive"), ("abc", "8/255")])
def test_bad_eps_is_a_one_line_error(text, match):
    with pytest.raises(CureZooError, match=match) as err:
        parse_eps(text)
    assert "\n" not in str(err.value)


def test_attack_parsing_expands_the_sweep_and_other_eps():
    names = [s.name for s in parse_attacks("nat,pgd20,sweep,cw20@2/255")]
    assert names == [
        "nat",
        "pgd20",
        "pgd20@0.25/255",
        "pgd20@0.5/255",
        "pgd20@1/255",
        "pgd20@2/255",
        "pgd20@4/255",
        "cw20@2/255",
    ]  # fmt: skip  (the sweep's 8/255 point is pgd20 itself)
    cw = parse_attacks(["cw20"])[0]
    assert (cw.loss, cw.steps, cw.step_size, cw.confidence, cw.eps) == ("cw", 20, 0.003, 50.0, 8 / 255)
    with pytest.raises(CureZooError, match="choose from: nat, pgd20, pgd100, cw20, aa, sweep"):
        parse_attacks("nat,fgsm")


def test_masks_and_indices_round_trip_compactly():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(1001, generator=g) > 0.5
    text = encode_mask(mask)
    assert len(text) == 2 * math.ceil(1001 / 8)
    assert torch.equal(decode_mask(text, 1001), mask)
    idx = [0, 1, 2, 3, 10, 11, 40]
    assert indices_to_ranges(idx) == [[0, 4], [10, 12], [40, 41]]
    assert ranges_to_indices(indices_to_ranges(idx)) == idx


def test_eval_result_json_round_trip(tmp_path):
    masks = {"nat": torch.tensor([True, False, True]), "pgd20": torch.tensor([False, False, True])}
    result = EvalResult(
        model={"spec": "x", "name": "x", "weights_sha256": None},
        dataset={"name": "cifar10", "split": "test", "source": "s", "n_examples": 3, "indices": [5, 6, 7]},
        protocol={"eps": 8 / 255, "attacks": {"nat": {"kind": "nat"}, "pgd20": {"kind": "pgd", "eps": 8 / 255}}},
        results={"nat": {"accuracy": 200 / 3, "correct": 2, "n": 3, "ci95": [1.0, 2.0]}, "nrr_cw": 1.5},
        masks=masks,
        time_s=1.0,
    )
    path = result.save(tmp_path / "r.json")
    back = EvalResult.load(path)
    assert back.indices == [5, 6, 7] and back.to_json()["dataset"]["indices"] == [[5, 8]]
    assert all(torch.equal(back.mask(k), masks[k]) for k in masks)
    assert back.results == result.results and back.differing_samples(result) == {"nat": 0, "pgd20": 0}
    assert back.claims() == {"nat": 66.67, "nrr_cw": 1.5}
    (tmp_path / "bad.json").write_text('{"schema": "other"}')
    with pytest.raises(CureZooError, match="not a cure-zoo evaluation result"):
        EvalResult.load(tmp_path / "bad.json")


def _aa_chunk(robust: list[bool], stages: dict[str, int], start: int) -> EvalResult:
    masks = {"nat": torch.ones(len(robust), dtype=torch.bool), "aa": torch.tensor(robust)}
    results, _ = summarise(masks)
    results["aa"]["stages"] = stage_summary(stages, len(robust), STANDARD_ATTACKS)
    return EvalResult(
        model={"spec": "x", "name": "x", "weights_sha256": "h"},
        dataset={
            "name": "cifar10",
            "split": "test",
            "source": "s",
            "n_examples": len(robust),
            "indices": list(range(start, start + len(robust))),
        },  # fmt: skip
        protocol={"eps": 8 / 255, "attacks": {"nat": {"kind": "nat"}, "aa": {"kind": "autoattack"}}},
        results=results,
        masks=masks,
        time_s=1.0,
    )


def test_autoattack_stage_counts_add_up_over_chunks_and_show_in_the_table():
    # chunk 1: all four sub-attacks ran; chunk 2: APGD-CE broke everything, so AutoAttack stopped there
    one = _aa_chunk([True, False, False, False], {"apgd-ce": 3, "apgd-t": 2, "fab-t": 1, "square": 1}, 0)
    two = _aa_chunk([False, False], {"apgd-ce": 0}, 4)
    assert two.results["aa"]["stages"] == {"apgd-ce": {"correct": 0, "accuracy": 0.0}}
    both = EvalResult.concat([one, two])
    stages = both.results["aa"]["stages"]
    assert {s: v["correct"] for s, v in stages.items()} == {"apgd-ce": 3, "apgd-t": 2, "fab-t": 1, "square": 1}
    assert stages["apgd-ce"]["accuracy"] == pytest.approx(50.0) and both.results["aa"]["correct"] == 1
    assert "aa: robust accuracy % after APGD-CE 50.00, APGD-T 33.33, FAB-T 16.67, SQUARE 16.67" in both.format_table()
