"""The numbers the CURE paper reports, as data (Gowda, Zonooz, Arani; ICLR 2024; arXiv:2401.14948).

Copied by hand from the paper's Tables 1-6 and 8 so that model cards can show, next to what cure-zoo measured,
what the paper reports for the same (method, architecture, dataset), and place a model among the paper's
baselines. Every value is in percent on the full test split, exactly as printed; a '-' cell is simply absent.
Nothing here is measured by cure-zoo, and cards label these numbers "reported in the paper".

Metric keys are the evaluation engine's result names: ``nat``, ``pgd20``, ``pgd100``, ``cw20`` (the paper's
"C&W" column, which is the L-inf CW-margin PGD), ``aa`` (AutoAttack), ``nrr_cw``
(NRR with Rob = C&W; Tables 1, 2, 4, 5, 6), ``nrr_aa`` and ``sum_aa`` (Rob = AA; Table 8), and for Table 3
(robust overfitting) ``nat_best``, ``nat_last``, ``nat_delta``, ``aa_best``, ``aa_last``, ``aa_delta``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

ARXIV_ID = "2401.14948"
ARXIV_URL = f"https://arxiv.org/abs/{ARXIV_ID}"
PAPER_TITLE = "Conserve-Update-Revise to Cure Generalization and Robustness Trade-off in Adversarial Training"
PAPER_AUTHORS = "Shruthi Gowda, Bahram Zonooz, Elahe Arani"
PAPER_VENUE = "ICLR 2024"

TABLE_CAPTIONS = {
    1: "Table 1: CIFAR-10, WideResNet-34-10 and ResNet-18; NRR w.r.t. C&W",
    2: "Table 2: ResNet-18 on CIFAR-100 and SVHN, incl. PGD-100; NRR w.r.t. C&W",
    3: "Table 3: robust overfitting on CIFAR-10 (best vs last epoch), PreActResNet-18 and WideResNet-34-10",
    4: "Table 4 (App. B): CURE vs CURE-Eff, ResNet-18 on CIFAR-10 and CIFAR-100; NRR w.r.t. C&W",
    5: "Table 5 (App. C.1): baselines started from a naturally pre-trained ResNet-18; NRR w.r.t. C&W",
    6: "Table 6 (App. C.2): larger ResNets on CIFAR-10 with ResNet-18 hyperparameters; NRR w.r.t. C&W",
    8: "Table 8 (App. C.4): SUM and NRR w.r.t. AutoAttack, CIFAR-10",
}

# Where a printed number disagrees with its own formula (NRR = 2*Nat*Rob/(Nat+Rob), SUM = Nat + AA) by more
# than rounding, or with the same quantity printed elsewhere. Recorded as printed, explained here.
NRR_TYPO_TABLE1_R18 = (
    "printed NRR 65.04 is a transposition typo: 2*86.76*52.48/(86.76+52.48) = 65.40 (NRR as App. F.2 defines it)"
)
CURE_R18_PGD20_TABLE5 = "PGD-20 printed as 54.90 here but 54.92 in Tables 1 and 4 (same model)"
# Found by tests/test_paper_results.py: printed values that do not follow from the
# same row's accuracies either.
NRR_MISMATCH_TABLE2_MART_SVHN = (
    "printed NRR 61.25 does not follow from the row's Nat and C&W: 2*88.10*48.95/(88.10+48.95) = 62.93"
)
NRR_TYPO_TABLE6_SAT_R101 = "printed NRR 46.64 looks like a transposition: 2*72.22*34.25/(72.22+34.25) = 46.46"
SUM_MISMATCH_TABLE8_LASAT_WRN = "printed SUM 138.79 differs from Nat + AA = 85.24 + 53.58 = 138.82"

# zoo method -> the names the paper's tables use for it ("SAT" in Tables 5-6 is PGD-AT, Madry et al.)
PAPER_METHOD_NAMES = {"cure": ("CURE",), "at": ("AT", "SAT"), "trades": ("TRADES",), "st": ()}


@dataclass(frozen=True)
class PaperRow:
    """One method's numbers for one (architecture, dataset) in one table of the paper."""

    table: int
    method: str  # as printed: "CURE", "LAS-AT", "CURE-Eff"
    venue: str  # as printed after the method name ("ICLR'18"), "" where none
    arch: str  # the zoo's short architecture name: "resnet18", "wrn34_10", ...
    dataset: str  # "cifar10", "cifar100", "svhn"
    metrics: Mapping[str, float]
    setting: str = ""  # a training setting other than the paper's standard one (Table 5)
    notes: tuple[str, ...] = field(default=())

    @property
    def caption(self) -> str:
        return TABLE_CAPTIONS[self.table]


def _rows(
    table: int,
    arch: str,
    dataset: str,
    columns: tuple[str, ...],
    text: str,
    *,
    width: int,
    setting: str = "",
    notes: Mapping[str, tuple[str, ...]] | None = None,
    offset: int = 0,
) -> list[PaperRow]:
    """Parse rows printed as ``METHOD [VENUE] v1 ... v<width>`` ('-' = not reported; CURE's venue is '-').
    ``offset`` skips leading values (the second architecture/dataset of a table's row); ``notes`` maps a
    method to its notes."""
    out = []
    for line in text.strip().splitlines():
        method, *values = line.split()
        venue = values.pop(0) if len(values) == width + 1 else ""
        if len(values) != width:
            raise ValueError(f"Table {table}, {method}: {len(values)} values, expected {width}")
        values = values[offset : offset + len(columns)]
        metrics = {c: float(v) for c, v in zip(columns, values, strict=True) if v != "-"}
        out.append(
            PaperRow(
                table,
                method,
                venue.strip("-"),
                arch,
                dataset,
                MappingProxyType(metrics),
                setting,
                tuple((notes or {}).get(method, ())),
            )
        )
    return out


_T1 = """
AT ICLR'18 85.17 55.08 44.04 52.91 65.27 82.78 51.30 44.63 49.72 62.12
TRADES ICML'19 84.73 56.82 52.95 54.29 66.17 82.41 52.76 48.37 50.43 62.57
MART ICLR'20 83.62 56.74 51.23 53.16 64.99 80.70 54.02 47.49 49.35 61.24
FAT ICML'20 86.60 49.86 47.48 49.35 62.87 87.72 46.69 43.14 49.66 63.41
ST-AT ICLR'23 84.92 57.73 53.54 - - 83.10 54.62 50.50 51.43 63.53
ACT BMVC'20 87.10 54.77 - - - 84.33 55.83 - - -
ARD AAAI'20 85.18 53.79 - - - 82.84 51.41 - - -
IAD ICLR'22 83.06 56.17 52.68 53.99 65.44 80.63 53.84 50.17 51.60 62.92
LAS-AT CVPR'22 85.24 57.07 53.58 55.45 67.19 82.39 53.70 49.94 51.96 63.72
CURE - 87.05 58.28 52.10 55.25 67.60 86.76 54.92 49.69 52.48 65.04
"""
_T1_COLS = ("nat", "pgd20", "aa", "cw20", "nrr_cw")

_T2 = """
AT ICLR'18 57.27 26.66 26.29 24.89 34.69 89.21 51.18 50.35 48.39 62.74
TRADES ICML'19 57.94 29.25 29.10 25.88 35.77 90.20 54.49 54.18 52.09 66.04
MART ICLR'20 55.03 28.25 28.10 26.60 35.86 88.10 54.70 54.13 48.95 61.25
FAT ICML'20 61.61 18.35 17.98 19.31 29.40 - - - - -
HAT ICLR'21 58.73 27.92 - 24.60 34.67 92.06 57.35 - 54.77 68.67
ST-AT ICLR'23 58.44 30.53 30.39 26.70 36.65 90.68 56.35 56.00 52.75 66.69
CURE - 60.72 30.81 29.82 27.95 38.27 92.77 61.56 58.73 57.34 70.87
"""
_T2_COLS = ("nat", "pgd20", "pgd100", "cw20", "nrr_cw")

_T3 = """
AT ICLR'18 82.50 83.99 1.49 48.21 42.46 -5.75 85.90 86.63 0.74 53.42 48.22 -5.20
TRADES ICML'19 81.19 82.48 1.29 49.03 46.80 -2.23 84.65 - - 53.08 - -
AWP NeurIPS'20 83.33 84.39 1.06 50.57 49.95 -0.62 85.57 - - 54.04 - -
KD ICLR'21 84.51 85.40 0.89 49.87 49.72 -0.15 86.81 87.06 0.25 - - -
TE ICLR'22 82.35 82.79 0.44 50.59 49.62 -0.97 - - - - - -
IDBH ICLR'23 83.96 84.92 0.97 50.74 49.99 -0.75 88.61 89.12 0.52 55.83 54.01 -1.82
CURE - 86.54 86.54 0.00 50.23 50.23 0.00 87.05 87.05 0.00 52.10 52.10 0.00
"""
_T3_COLS = ("nat_best", "nat_last", "nat_delta", "aa_best", "aa_last", "aa_delta")

_T4 = """
AT 82.78 51.30 44.63 49.72 62.12 57.27 26.66 23.60 24.89 34.69
TRADES 82.41 52.76 48.37 50.43 62.57 57.94 29.25 24.71 25.88 35.77
MART 80.70 54.02 47.49 49.35 61.24 55.03 28.25 25.13 26.60 35.86
FAT 87.72 46.69 43.14 49.66 63.41 61.61 18.35 17.98 19.31 29.40
CURE 86.76 54.92 49.69 52.48 65.04 60.72 30.81 25.12 27.95 38.27
CURE-Eff 83.51 54.90 48.50 51.94 64.04 58.15 30.53 24.78 26.12 36.04
"""

_T5 = """
SAT 84.37 43.92 44.14 57.95 54.33 20.36 19.96 29.19
TRADES 80.90 50.84 49.04 61.06 53.25 25.50 23.08 32.20
CURE 86.76 54.90 52.48 65.04 60.72 30.81 27.95 38.27
"""
_T5_COLS = ("nat", "pgd20", "cw20", "nrr_cw")

_T6 = """
SAT 72.86 37.54 36.92 49.00 72.22 35.49 34.25 46.64
TRADES 73.06 40.33 37.56 49.61 72.28 39.16 36.69 48.67
CURE 74.58 43.85 41.04 52.94 73.67 42.80 38.90 50.91
"""

_T8 = """
AT ICLR'18 85.17 55.08 44.04 52.91 129.21 58.05 82.78 51.30 44.63 49.72 127.41 57.99
TRADES ICML'19 84.73 56.82 52.95 54.29 137.68 65.17 82.41 52.76 48.37 50.43 130.78 60.95
MART ICLR'20 83.62 56.74 51.23 53.16 134.85 63.53 80.70 54.02 47.49 49.35 128.19 59.79
FAT ICML'20 86.60 49.86 47.48 49.35 134.08 61.33 87.72 46.69 43.14 49.66 130.86 57.83
ST-AT ICLR'23 84.92 57.73 53.54 - 138.46 65.67 83.10 54.62 50.50 51.43 133.60 62.82
ACT BMVC'20 87.10 54.77 - - - - 84.33 55.83 - - - -
ARD AAAI'20 85.18 53.79 - - - - 82.84 51.41 - - - -
IAD ICLR'22 83.06 56.17 52.68 53.99 135.74 64.47 80.63 53.84 50.17 51.60 130.80 61.85
LAS-AT CVPR'22 85.24 57.07 53.58 55.45 138.79 65.79 82.39 53.70 49.94 51.96 132.33 62.18
CURE - 87.05 58.28 52.10 55.25 139.15 65.19 86.76 54.92 49.69 52.48 136.45 63.18
"""
_T8_COLS = ("nat", "pgd20", "aa", "cw20", "sum_aa", "nrr_aa")

_PRETRAINED = "baselines started from a naturally pre-trained ResNet-18 (the CURE row restates CURE's standard result)"

PAPER_ROWS: tuple[PaperRow, ...] = tuple(
    _rows(1, "wrn34_10", "cifar10", _T1_COLS, _T1, width=10)
    + _rows(1, "resnet18", "cifar10", _T1_COLS, _T1, width=10, offset=5, notes={"CURE": (NRR_TYPO_TABLE1_R18,)})
    + _rows(2, "resnet18", "cifar100", _T2_COLS, _T2, width=10)
    + _rows(2, "resnet18", "svhn", _T2_COLS, _T2, width=10, offset=5, notes={"MART": (NRR_MISMATCH_TABLE2_MART_SVHN,)})
    + _rows(3, "preactresnet18", "cifar10", _T3_COLS, _T3, width=12)
    + _rows(3, "wrn34_10", "cifar10", _T3_COLS, _T3, width=12, offset=6)
    + _rows(4, "resnet18", "cifar10", _T1_COLS, _T4, width=10, notes={"CURE": (NRR_TYPO_TABLE1_R18,)})
    + _rows(4, "resnet18", "cifar100", _T1_COLS, _T4, width=10, offset=5)
    + _rows(
        5,
        "resnet18",
        "cifar10",
        _T5_COLS,
        _T5,
        width=8,
        setting=_PRETRAINED,
        notes={"CURE": (CURE_R18_PGD20_TABLE5, NRR_TYPO_TABLE1_R18)},
    )
    + _rows(5, "resnet18", "cifar100", _T5_COLS, _T5, width=8, setting=_PRETRAINED, offset=4)
    + _rows(6, "resnet50", "cifar10", _T5_COLS, _T6, width=8)
    + _rows(6, "resnet101", "cifar10", _T5_COLS, _T6, width=8, offset=4, notes={"SAT": (NRR_TYPO_TABLE6_SAT_R101,)})
    + _rows(8, "wrn34_10", "cifar10", _T8_COLS, _T8, width=12, notes={"LAS-AT": (SUM_MISMATCH_TABLE8_LASAT_WRN,)})
    + _rows(8, "resnet18", "cifar10", _T8_COLS, _T8, width=12, offset=6)
)


def paper_rows(
    method: str | None = None, arch: str | None = None, dataset: str | None = None, *, standard_only: bool = True
) -> list[PaperRow]:
    """Rows of the paper's tables, filtered by printed method name, zoo architecture and dataset.

    ``standard_only`` drops rows trained in a non-standard setting (Table 5's pre-trained baselines).
    """
    return [
        r
        for r in PAPER_ROWS
        if (method is None or r.method == method)
        and (arch is None or r.arch == arch)
        and (dataset is None or r.dataset == dataset)
        and not (standard_only and r.setting)
    ]


def reported_for(zoo_method: str, arch: str, dataset: str, *, variant: str = "") -> list[PaperRow]:
    """The paper's rows for one zoo model (``cure``/``at``/``trades``/``st``), in table order.

    ``variant='eff'`` selects CURE-Eff (Table 4). Natural training (``st``) is never reported in a table.
    """
    names = ("CURE-Eff",) if (zoo_method, variant) == ("cure", "eff") else PAPER_METHOD_NAMES.get(zoo_method, ())
    return [r for r in paper_rows(arch=arch, dataset=dataset) if r.method in names]


def tradeoff_baselines(arch: str, dataset: str, robust_metric: str) -> tuple[int, list[PaperRow]] | None:
    """The paper's main comparison for (arch, dataset) that reports both ``nat`` and ``robust_metric``: the
    lowest-numbered table with such rows, and those rows. ``None`` when the paper has none."""
    for table in sorted(TABLE_CAPTIONS):
        rows = [
            r
            for r in paper_rows(arch=arch, dataset=dataset)
            if r.table == table and "nat" in r.metrics and robust_metric in r.metrics
        ]
        if len(rows) >= 2:
            return table, rows
    return None
