"""``cure-zoo list``: the zoo as a table (or JSON)."""

from __future__ import annotations

import argparse
import fnmatch
import json
from typing import Any

CLAIM_COLUMNS = ("nat", "pgd20", "aa", "cw20", "nrr_cw")  # result keys; names from evaluation.metrics.METRICS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "list",
        help="list the zoo's models",
        description="List every registered model: architecture, dataset, training method, parameter count, "
        "whether weights are published, and the measured numbers of published weights.",
    )
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter on names, e.g. 'cure_*'")
    p.add_argument("--json", action="store_true", help="print JSON (one object per model) instead of a table")
    p.set_defaults(run=run)


def zoo_rows(pattern: str = "*") -> list[dict[str, Any]]:
    from cure_zoo.models import param_count
    from cure_zoo.models.zoo import ARCHITECTURES, METHODS, SMALL_SCALE_NOTE, ZOO

    rows, params = [], {}
    for e in ZOO:
        if not fnmatch.fnmatch(e.name, pattern):
            continue
        key = (e.architecture, e.num_classes)
        if key not in params:
            params[key] = param_count(e.architecture, e.num_classes, {})
        if e.weights_source == "pyautoattack":
            weights = "bundled (pyautoattack)"
        elif e.weights_source == "package":
            weights = "shipped, small scale*" if e.published else "not shipped, small scale*"
        else:
            weights = f"published @ {e.revision[:8]}" if e.published else "not published"
        rows.append(
            dict(
                name=e.name,
                architecture=ARCHITECTURES[e.arch][1],
                timm_architecture=e.architecture,
                dataset=e.dataset,
                method=e.method,
                method_description=METHODS[e.method],
                num_classes=e.num_classes,
                params=params[key],
                weights=weights,
                published=e.published,
                hf_hub_id=e.hf_hub_id,
                small_scale=bool(e.train_subset),
                note=SMALL_SCALE_NOTE if e.train_subset else "",
                claims=dict(e.claims),
            )
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    from cure_zoo.evaluation.metrics import METRICS
    from cure_zoo.tables import text_table

    header = ["name", "architecture", "dataset", "method", "params", "weights"] + [METRICS[k][0] for k in CLAIM_COLUMNS]
    lines = [header]
    for r in rows:
        claims = [f"{r['claims'][k]:.2f}" if k in r["claims"] else "-" for k in CLAIM_COLUMNS]
        lines.append(
            [r["name"], r["architecture"], r["dataset"], r["method"], f"{r['params'] / 1e6:.2f}M", r["weights"]]
            + claims
        )
    return text_table(lines)


def run(args: argparse.Namespace) -> int:
    from cure_zoo.errors import CureZooError
    from cure_zoo.models.zoo import SMALL_SCALE_NOTE

    rows = zoo_rows(args.pattern)
    if not rows:
        raise CureZooError(f"no model matches {args.pattern!r}; try 'cure-zoo list' for all models")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
        print(
            "\nNumbers are % on the CIFAR/SVHN test split, measured by cure-zoo (see each model card); "
            "'-' = no published weights yet."
        )
        if any(r["small_scale"] for r in rows):
            print(f"* {SMALL_SCALE_NOTE} (the CIFAR-10-5k track, benchmarks/cifar10_5k/).")
    return 0
