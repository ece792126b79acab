"""The paper's reported numbers, as transcribed: checked against the paper's own formulas, so a transcription
slip (or a typo in the paper) shows up as a disagreement that must be explained by a recorded note."""

import pytest

from cure_zoo.hub.paper_results import (
    NRR_TYPO_TABLE1_R18,
    PAPER_ROWS,
    paper_rows,
    reported_for,
    tradeoff_baselines,
)

# Printed values have two decimals and are computed from unrounded accuracies: allow rounding of all inputs.
ROUNDING = 0.015


def _nrr(nat: float, rob: float) -> float:
    return 2 * nat * rob / (nat + rob)


def test_every_printed_nrr_and_sum_matches_its_formula_or_carries_a_note():
    mismatches = []
    for r in PAPER_ROWS:
        m = r.metrics
        checks = []
        if "nrr_cw" in m:
            checks.append(("nrr_cw", m["nrr_cw"], _nrr(m["nat"], m["cw20"])))
        if "nrr_aa" in m:
            checks.append(("nrr_aa", m["nrr_aa"], _nrr(m["nat"], m["aa"])))
        if "sum_aa" in m:
            checks.append(("sum_aa", m["sum_aa"], m["nat"] + m["aa"]))
        for kind in ("nat", "aa"):
            if f"{kind}_delta" in m:
                checks.append((f"{kind}_delta", m[f"{kind}_delta"], m[f"{kind}_last"] - m[f"{kind}_best"]))
        for key, printed, formula in checks:
            if abs(printed - formula) > ROUNDING:
                mismatches.append((r.table, r.method, r.arch, r.dataset, key, printed, round(formula, 2)))
                # the row's note explains this very number
                assert any(f"{printed:.2f}" in n and f"{formula:.2f}" in n for n in r.notes), (r, key, formula)
    assert sorted(mismatches) == [
        # the transposition typo, printed in Tables 1, 4 and 5
        (1, "CURE", "resnet18", "cifar10", "nrr_cw", 65.04, 65.4),
        (2, "MART", "resnet18", "svhn", "nrr_cw", 61.25, 62.93),
        (4, "CURE", "resnet18", "cifar10", "nrr_cw", 65.04, 65.4),
        (5, "CURE", "resnet18", "cifar10", "nrr_cw", 65.04, 65.4),
        (6, "SAT", "resnet101", "cifar10", "nrr_cw", 46.64, 46.46),
        (8, "LAS-AT", "wrn34_10", "cifar10", "sum_aa", 138.79, 138.82),
    ]
    assert NRR_TYPO_TABLE1_R18 in reported_for("cure", "resnet18", "cifar10")[0].notes


def test_numbers_repeated_across_tables_agree():
    """Tables 1, 4 and 8 print the same ResNet-18/WRN CIFAR-10 results; Table 2 and 4 the CIFAR-100 ones.
    Table 5's baselines are a different training setting; its CURE row restates CURE's standard result."""
    by_key = {}
    for r in paper_rows(standard_only=False):
        setting = "" if r.method == "CURE" else r.setting
        for metric, value in r.metrics.items():
            by_key.setdefault((r.method, r.arch, r.dataset, setting, metric), []).append((r.table, value, r.notes))
    disagreements = {
        k: v for k, v in by_key.items() if len({value for _, value, _ in v}) > 1 and not any(n for *_, n in v)
    }
    assert not disagreements


@pytest.mark.parametrize(
    "method,arch,dataset,expected",
    [
        ("cure", "wrn34_10", "cifar10", {"nat": 87.05, "pgd20": 58.28, "aa": 52.10, "cw20": 55.25, "nrr_cw": 67.60}),
        ("cure", "resnet18", "svhn", {"nat": 92.77, "pgd20": 61.56, "pgd100": 58.73, "cw20": 57.34, "nrr_cw": 70.87}),
        ("at", "resnet101", "cifar10", {"nat": 72.22, "pgd20": 35.49, "cw20": 34.25, "nrr_cw": 46.64}),
        ("trades", "resnet18", "cifar100", {"nat": 57.94, "pgd20": 29.25, "pgd100": 29.10, "cw20": 25.88}),
    ],
)
def test_spot_values_as_printed(method, arch, dataset, expected):
    row = reported_for(method, arch, dataset)[0]
    assert {k: row.metrics[k] for k in expected} == expected


def test_cure_eff_and_robust_overfitting_rows():
    (eff_c10,) = [r for r in reported_for("cure", "resnet18", "cifar10", variant="eff")]
    assert eff_c10.table == 4 and eff_c10.metrics["nat"] == 83.51 and eff_c10.metrics["nrr_cw"] == 64.04
    (t3,) = [r for r in reported_for("cure", "preactresnet18", "cifar10") if r.table == 3]
    assert t3.metrics["aa_best"] == t3.metrics["aa_last"] == 50.23
    assert reported_for("st", "resnet18", "cifar10") == []  # natural training is in no table


def test_tradeoff_baselines_use_the_papers_main_table():
    table, rows = tradeoff_baselines("resnet18", "cifar10", "aa")
    assert table == 1 and {r.method for r in rows} >= {"AT", "TRADES", "MART", "FAT", "CURE"}
    assert "ACT" not in {r.method for r in rows}  # ACT reports no AA
    assert tradeoff_baselines("resnet18", "cifar100", "cw20")[0] == 2
    assert tradeoff_baselines("resnet34", "cifar10", "aa") is None
