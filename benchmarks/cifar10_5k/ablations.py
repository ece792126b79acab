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


def _masks(path: Path, n: int | None) -> tuple[dict, dict]:
    """(protocol, {attack: mask over the first n images}) of one evaluation."""
    result = EvalResult.load(path)
    n = n or result.n_examples
    if result.indices[:n] != list(range(n)):
        raise SystemExit(f"{path}: not evaluated on the first {n} test images")
    return result.protocol, {a: result.mask(a)[:n] for a in ATTACKS}


def mcnemar_p(better: int, worse: int) -> float:
    """Exact two-sided McNemar test: the chance of a split of the discordant images at least this uneven if
    neither row were better (binomial with p = 1/2)."""
    n, k = better + worse, min(better, worse)
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def _cell(summary: dict) -> str:
    lo, hi = summary["ci95"]
    return f"{summary['accuracy']:.1f} [{lo:.1f}, {hi:.1f}]"


def main() -> int:
    evaluated = [key for key, _, _ in ROWS if key and (ABLATIONS / key / "eval.json").is_file()]
    if not evaluated:
        raise SystemExit(f"no ablation evaluated yet (ablations/<run>/eval.json under {ABLATIONS})")
    sizes = {EvalResult.load(ABLATIONS / key / "eval.json").n_examples for key in evaluated}
    if len(sizes) != 1:
        raise SystemExit(f"the ablation runs were evaluated on different numbers of images: {sorted(sizes)}")
    n = sizes.pop()
    base_protocol, base = _masks(FULL_CURE, n)
    rows, records = [], []
    for key, rgp, revise in ROWS:
        if key is None:
            protocol, masks = base_protocol, base
        elif key in evaluated:
            protocol, masks = _masks(ABLATIONS / key / "eval.json", n)
        else:
            continue
        if _protocol(protocol) != _protocol(base_protocol):
            raise SystemExit(f"{key}: evaluated under another protocol than the full CURE: {_protocol(protocol)}")
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
        }
        records.append(record)

        record["mcnemar_p"] = {a: mcnemar_p(*paired[a]) for a in ATTACKS}
        shown = [f"{a} +{paired[a][0]}/−{paired[a][1]} (p {record['mcnemar_p'][a]:.2f})" for a in ("nat", "aa")]
        diff = "—" if key is None else ", ".join(shown)
        rows.append(
            [
                "✓" if rgp else "–",
                "✓" if revise else "–",
                *[_cell(acc[a]) for a in ATTACKS],
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
