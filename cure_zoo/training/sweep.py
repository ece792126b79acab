"""Sensitivity sweeps (paper App. F, Table 10): the same recipe trained once per value of one key.

``cure-zoo train --recipe R --sweep cure.p=10,20,30 --sweep cure.alpha=0.1,0.2 --output DIR`` trains one run
per value, one key at a time with every other key at the recipe's value (Table 10 varies p, alpha and gamma
separately), into ``DIR/<key>=<value>`` (a ``/`` in the value is written ``_``: ``attack.eps=8_255``). Each run
is an ordinary run directory: running the command again resumes an interrupted one and leaves finished ones as
they are. After each run ``DIR/sweep_summary.json`` and ``DIR/sweep_summary.md`` list every finished run's
last evaluated epoch (the per-epoch check, ``eval.*``: natural and PGD accuracy on the held-out images).

Every value is read as ``--set`` reads it (YAML) and every recipe is built, so checked, before the first run
starts: a malformed ``--sweep``, an unknown key or a bad value is one line and exit status 2.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import write_json_atomic, write_text_atomic
from ..tables import markdown_table
from .recipe import Recipe, RecipeError, load_recipe, parse_override

SUMMARY_JSON = "sweep_summary.json"
SUMMARY_MD = "sweep_summary.md"
_USAGE = "--sweep expects KEY=V1,V2,... (e.g. cure.p=10,20,30)"


@dataclass
class SweepPoint:
    key: str
    text: str  # the value as written on the command line
    value: Any  # as the recipe loader reads it

    @property
    def dirname(self) -> str:
        return f"{self.key}={self.text.replace('/', '_')}"


def parse_sweep(text: str) -> list[SweepPoint]:
    """``KEY=V1,V2,...`` -> one point per value; RecipeError (one line) for anything else."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise RecipeError(f"{_USAGE}, got {text!r}")
    if any(c in raw for c in "[]{}"):
        raise RecipeError(f"--sweep values are single values (numbers, words, true/false), not lists; got {text!r}")
    items = [v.strip() for v in raw.split(",")]
    if any(not v for v in items):
        raise RecipeError(f"--sweep {key}: an empty value in {raw!r} ({_USAGE.split(' ', 2)[2]})")
    points = [SweepPoint(key, v, parse_override(f"{key}={v}")[1]) for v in items]
    for i, point in enumerate(points):
        if any(point.value == other.value for other in points[:i]):
            raise RecipeError(f"--sweep {key}: the value {point.text!r} is given twice")
    return points


def plan_sweep(recipe: str, overrides: list[str], sweeps: list[str]) -> list[tuple[SweepPoint, Recipe]]:
    """Every (point, resolved recipe) of the sweeps, all validated before anything is trained."""
    parsed = [parse_sweep(s) for s in sweeps]
    keys = [points[0].key for points in parsed]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise RecipeError(f"--sweep {repeated[0]} is given twice; list all its values in one --sweep")
    fixed = {parse_override(o)[0] for o in overrides}
    clash = [k for k in keys if k in fixed]
    if clash:
        raise RecipeError(f"--sweep {clash[0]} and --set {clash[0]} both set it; drop one of them")
    if len({p.dirname for points in parsed for p in points}) != sum(len(points) for points in parsed):
        raise RecipeError("two --sweep values would share a run directory (a '/' is written '_'); write them apart")
    return [(p, load_recipe(recipe, [*overrides, f"{p.key}={p.text}"])) for points in parsed for p in points]


def _row(point: SweepPoint, metrics: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    last = next((m for m in reversed(metrics) if "eval" in m), None)
    return {
        "key": point.key,
        "value": point.value,
        "run_dir": point.dirname,
        "epochs": epochs,
        "eval_epoch": last["epoch"] if last else None,
        "eval": last["eval"] if last else None,
    }


def write_summary(output: Path, recipe_name: str, rows: list[dict[str, Any]], planned: int) -> tuple[Path, Path]:
    """``sweep_summary.json`` and ``sweep_summary.md`` of the finished runs."""
    summary = {"recipe": recipe_name, "runs_planned": planned, "runs": rows}
    json_path = write_json_atomic(output / SUMMARY_JSON, summary)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in (row["eval"] or {}) if k.endswith("_acc") and k not in columns]
    lines = [
        f"# Sweep of `{recipe_name}`",
        "",
        f"{len(rows)} of {planned} runs finished. Accuracies (%) are each run's last evaluated epoch, on the "
        "held-out images of the per-epoch check (`eval.*`), not a full evaluation.",
        "",
    ]
    table = []
    for row in rows:
        ev = row["eval"] or {}
        cells = [f"{ev[c]:.2f}" if c in ev else "-" for c in columns]
        epoch = "-" if row["eval_epoch"] is None else str(row["eval_epoch"])
        table.append([f"`{row['key']}`", str(row["value"]), epoch, *cells, str(row["run_dir"])])
    lines.append(markdown_table(["key", "value", "epoch", *columns, "run"], table))
    md_path = write_text_atomic(output / SUMMARY_MD, "\n".join(lines) + "\n")
    return json_path, md_path


def run_sweep(
    plan: list[tuple[SweepPoint, Recipe]], output: str | Path, train: Callable[[Recipe, Path], Any]
) -> list[dict[str, Any]]:
    """Train every point of ``plan`` into ``output/<key>=<value>`` in turn, rewriting the summary after each."""
    output = Path(output)
    rows = []
    main_process = int(os.environ.get("RANK", "0")) == 0
    for point, recipe in plan:
        result = train(recipe, output / point.dirname)
        rows.append(_row(point, result.metrics, result.epochs_done))
        if main_process:
            write_summary(output, plan[0][1].name, rows, len(plan))
    return rows
