#!/usr/bin/env python
"""Table 7 of the CURE paper (App. C.3) on the CIFAR-10-5k track: CURE without RGP, without the revision stage,
and without both, beside the full CURE (``cure_resnet18_w16_cifar10_5k``), all from the track's ST weights.

    python benchmarks/cifar10_5k/ablations.py

reads ``ablations/<run>/eval.json`` of each ablation run (``cure-zoo eval RUN --attacks nat,pgd20,cw20,aa
--n-examples N --batch-size 100``) and the full CURE's bundled ``eval.json`` restricted to the same images
(its per-image masks), checks that every evaluation ran the same protocol on the same images, and writes
``ablations/results.md`` and ``results.json``. Besides the accuracies it counts, per attack, the images on
which a row's outcome differs from the full CURE's (better / worse): a paired comparison, sharper than the
overlap of two intervals.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from campaign import accuracy_cell  # noqa: E402  (this folder: sys.path[0])

from cure_zoo.evaluation.metrics import accuracy_summary, nrr  # noqa: E402
from cure_zoo.evaluation.result import EvalResult  # noqa: E402
from cure_zoo.tables import markdown_table  # noqa: E402

ABLATIONS = HERE / "ablations"
FULL_CURE = ROOT / "cure_zoo" / "models" / "bundled" / "cure_resnet18_w16_cifar10_5k" / "eval.json"
ATTACKS = ("nat", "pgd20", "cw20", "aa")
# (run directory under ablations/ or None for the bundled full CURE, RGP on, revision stage on)
ROWS = [(None, True, True), ("no_rgp", False, True), ("no_revise", True, False), ("no_rgp_no_revise", False, False)]


def _protocol(protocol: dict) -> dict:
    """What must agree for two rows to be compared image by image (batch size and chunking need not: the PGD
    starts are drawn per image index, and AutoAttack's batch is the same 100 in every row)."""
    same = {f: protocol[f] for f in ("eps", "norm", "seed", "aa_batch_size", "dtype")}
    return {**same, "attacks": {a: protocol["attacks"][a] for a in ATTACKS}}


def _masks(result: EvalResult, n: int, where: Path) -> dict:
    """{attack: mask over the first n test images} of one evaluation."""
    if result.indices[:n] != list(range(n)):
        raise SystemExit(f"{where}: not evaluated on the first {n} test images")
    return {a: result.mask(a)[:n] for a in ATTACKS}


def mcnemar_p(better: int, worse: int) -> float:
    """Exact two-sided McNemar test: the chance of a split of the discordant images at least this uneven if
    neither row were better (binomial with p = 1/2)."""
    n, k = better + worse, min(better, worse)
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def main() -> int:
    paths = {key: ABLATIONS / key / "eval.json" for key, _, _ in ROWS if key}
    evaluated = {key: EvalResult.load(path) for key, path in paths.items() if path.is_file()}
    if not evaluated:
        raise SystemExit(f"no ablation evaluated yet (ablations/<run>/eval.json under {ABLATIONS})")
    sizes = {result.n_examples for result in evaluated.values()}
    if len(sizes) != 1:
        raise SystemExit(f"the ablation runs were evaluated on different numbers of images: {sorted(sizes)}")
    n = sizes.pop()
    full = EvalResult.load(FULL_CURE)
    base = _masks(full, n, FULL_CURE)
    rows, records = [], []
    for key, rgp, revise in ROWS:
        if key is not None and key not in evaluated:
            continue
        result = full if key is None else evaluated[key]
        masks = base if key is None else _masks(result, n, paths[key])
        if _protocol(result.protocol) != _protocol(full.protocol):
            raise SystemExit(
                f"{key}: evaluated under another protocol than the full CURE: {_protocol(result.protocol)}"
            )
        acc = {a: accuracy_summary(masks[a]) for a in ATTACKS}
        paired = {a: [int((masks[a] & ~base[a]).sum()), int((~masks[a] & base[a]).sum())] for a in ATTACKS}
        record = {
            "run": key or "cure_resnet18_w16_cifar10_5k",
            "rgp": rgp,
            "revision": revise,
            "n": n,
            **{a: acc[a] for a in ATTACKS},
            "nrr_aa": nrr(acc["nat"]["accuracy"], acc["aa"]["accuracy"]),
            "vs_full_cure_better_worse": paired,
            "mcnemar_p": {a: mcnemar_p(*paired[a]) for a in ATTACKS},
        }
        records.append(record)
        shown = [f"{a} +{paired[a][0]}/−{paired[a][1]} (p {record['mcnemar_p'][a]:.2f})" for a in ("nat", "aa")]
        diff = "—" if key is None else ", ".join(shown)
        rows.append(
            [
                "✓" if rgp else "–",
                "✓" if revise else "–",
                *[accuracy_cell(acc[a]) for a in ATTACKS],
                f"{record['nrr_aa']:.1f}",
                diff,
                f"`{record['run']}`",
            ]
        )
    header = ["RGP", "Rev", "Nat", "PGD-20", "CW-20", "AA", "NRR (AA)", "images vs full CURE", "run"]
    (HERE / "ablations" / "results.md").write_text(
        f"Table 7 on the CIFAR-10-5k track (small scale, not the paper's models): the first {n} bundled test "
        "images, seed 0, batch 100; accuracy in % with 95% Wilson intervals. 'images vs full CURE': images this "
        "row gets right and the full CURE wrong (+) and the reverse (−), with the exact McNemar test's "
        "two-sided p.\n\n" + markdown_table(header, rows) + "\n"
    )
    (HERE / "ablations" / "results.json").write_text(json.dumps(records, indent=1) + "\n")
    print((HERE / "ablations" / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
