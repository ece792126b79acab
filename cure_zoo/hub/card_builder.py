"""Building a run's model card (``cure-zoo card RUN_DIR``), from its weights, config and evaluation; the
registry's cards (``model_cards/``, no weights) are built by :mod:`.registry_cards`. Both fill the one
template in :mod:`.cards`.

``card_for_run`` is the step between evaluation and push. It

1. checks that the evaluation was made on exactly the run's weights (sha256 of ``model.safetensors`` =
   ``config.json``'s ``weights_sha256`` = the evaluation's ``model.weights_sha256``) under the L-inf norm
   (the card's and the paper's threat model; an L2 evaluation is refused), and that every file it reads or
   replaces obeys the run-directory rule (:mod:`cure_zoo.rundir`: no links out, no special files);
2. copies the evaluation JSON into the run as ``eval.json`` (unless it is already there);
3. stores the claims in ``config.json`` under ``cure_zoo.claims``, so ``verify`` never parses prose, and the
   sha256 of the card it writes under ``cure_zoo.card``, so ``push`` can tell the files belong together;
4. draws ``figures/training_curves.png`` (from ``metrics.jsonl``), ``figures/grad_stats.png`` (when the run
   logged gradient statistics, ``run.grad_stats_every``), ``figures/tradeoff.png`` and, when the run holds
   ``analysis/cka_nat_vs_adv.json`` (the paper's Fig. 3 for this model, measured on these weights; see
   :func:`cure_zoo.rundir.read_cka_analysis`), ``figures/cka_nat_vs_adv.png`` with a section that summarises
   it (its sha256 goes under ``cure_zoo.card.analysis``, so ``push`` sends it only with the card drawn from it);
5. writes ``README.md``.

All of it is one transaction: the new files are built in a folder inside the run directory
(``.card-XXXX``) and swapped in together (:func:`cure_zoo.rundir.swap_in`), so a card that fails half-way
(a read-only ``figures/``, a full disk, Ctrl-C) leaves the previous card, claims and figures as they were.
``figures/`` belongs to the card: it is replaced as a whole.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import CureZooError
from ..io import atomic_write, sha256_file, write_json_atomic, write_text_atomic
from ..models import param_count
from ..rundir import (
    CARD_FILE,
    CARD_STAGING_PREFIX,
    CKA_ANALYSIS_FILE,
    CKA_FIGURE,
    CONFIG_BLOCK,
    CONFIG_FILE,
    EVAL_FILE,
    FIGURES_DIR,
    METRICS_FILE,
    WEIGHTS_FILE,
    check_entry,
    figure_names,
    read_cka_analysis,
    read_metrics,
    staging_leftovers,
    swap_in,
)
from .cards import CardData, render_card
from .claims import claims_from_eval, protocol_norm
from .paper_results import reported_for, tradeoff_baselines

TRADEOFF_METRICS = ("aa", "cw20", "pgd20")  # the robust axis of the trade-off plot, first one measured
CARD_NORM = "Linf"  # the template (cards.py) and the paper's tables describe L-inf robustness only


def arch_names(architecture: str) -> tuple[str | None, str]:
    """(zoo short name, human name) of a timm architecture entrypoint, e.g. ('resnet18', 'ResNet-18')."""
    from ..models.zoo import ARCHITECTURES

    for short, (entrypoint, human) in ARCHITECTURES.items():
        if entrypoint == architecture:
            return short, human
    return None, architecture


# ---------------------------------------------------------------------------------------------------------
# run directory


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise CureZooError(f"{path} does not exist ({what})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CureZooError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise CureZooError(f"{path} holds a JSON {type(data).__name__}, not an object ({what})")
    return data


def card_for_run(run_dir: str | Path, eval_path: str | Path | None = None, hub_repo: str | None = None) -> Path:
    """Write the card (README.md, figures, claims in config.json, eval.json) of a finished run, as one unit;
    see the module doc."""
    from ..evaluation.result import EvalResult

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CureZooError(f"{run_dir} is not a directory; pass a training run directory")
    for name in (WEIGHTS_FILE, CONFIG_FILE, EVAL_FILE, CARD_FILE, METRICS_FILE):
        check_entry(run_dir, name, must_exist=False)  # read or replaced here: the run-directory rule first
    figure_names(run_dir)
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise CureZooError(f"{run_dir} has no {WEIGHTS_FILE}; is the training run finished?")
    config = _read_json(run_dir / CONFIG_FILE, "the run's config, written by training")
    zoo = config.get(CONFIG_BLOCK) or {}
    eval_path = Path(eval_path) if eval_path else run_dir / EVAL_FILE
    if not eval_path.is_file():
        raise CureZooError(
            f"no evaluation at {eval_path}; run 'cure-zoo eval {run_dir} --json {run_dir / EVAL_FILE}' first "
            f"(or pass --eval PATH)"
        )
    result = EvalResult.load(eval_path)
    sha = sha256_file(weights)
    if zoo.get("weights_sha256") and zoo["weights_sha256"] != sha:
        raise CureZooError(
            f"{weights} (sha256 {sha[:12]}...) is not the file config.json describes ({zoo['weights_sha256'][:12]}...)"
        )
    measured = result.model.get("weights_sha256")
    if measured != sha:
        raise CureZooError(
            f"{eval_path} was measured on weights with sha256 {str(measured)[:12]}..., not on {weights} "
            f"({sha[:12]}...); evaluate this run: cure-zoo eval {run_dir} --json {run_dir / EVAL_FILE}"
        )
    norm = protocol_norm(result.protocol, str(eval_path))
    if norm != CARD_NORM:
        raise CureZooError(
            f"{eval_path} was measured under {norm}, but a model card states {CARD_NORM} results beside the "
            f"paper's {CARD_NORM} numbers; evaluate under {CARD_NORM} (no --norm): cure-zoo eval {run_dir} --json "
            f"{run_dir / EVAL_FILE}"
        )
    cka = read_cka_analysis(run_dir)
    if cka is not None and cka[0]["models"]["a"]["weights_sha256"] != sha:
        raise CureZooError(
            f"{run_dir / CKA_ANALYSIS_FILE} was measured on weights with sha256 "
            f"{cka[0]['models']['a']['weights_sha256'][:12]}..., not on {weights} ({sha[:12]}...); make it again: "
            f"cure-zoo analyze cka {run_dir} {run_dir} --b-inputs pgd20 --out DIR, then copy DIR/cka.json there"
        )
    from ..analysis.gradstats import grad_stats_records

    records = read_metrics(run_dir)  # read and checked before anything is written
    grad_stats = grad_stats_records(records, run_dir / METRICS_FILE)
    for leftover in staging_leftovers(run_dir):  # an earlier card that was killed half-way
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        stage = Path(tempfile.mkdtemp(prefix=CARD_STAGING_PREFIX, dir=run_dir))
    except OSError as err:
        raise CureZooError(f"cannot write the card into {run_dir}: {err.strerror}") from None
    try:
        names = _build_card(run_dir, stage, config, eval_path, result, hub_repo, records, grad_stats, cka)
        swap_in(run_dir, stage, names)
    except OSError as err:
        raise CureZooError(
            f"cannot write the card of {run_dir}: {err.strerror} ({err.filename}); nothing in it was changed"
        ) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return run_dir / CARD_FILE


def _build_card(
    run_dir: Path,
    stage: Path,
    config: dict[str, Any],
    eval_path: Path,
    result: Any,
    hub_repo: str | None,
    records: list[dict[str, Any]],
    grad_stats: list[dict[str, Any]],
    cka: tuple[dict[str, Any], str] | None = None,
) -> list[str]:
    """Write the card's files into ``stage``; returns the names to swap into ``run_dir``, config.json last.
    ``records``/``grad_stats``: the run's metrics.jsonl and the gradient statistics in it, checked;
    ``cka``: the run's natural-vs-adversarial CKA and its sha256 (:func:`cure_zoo.rundir.read_cka_analysis`)."""
    names = [FIGURES_DIR]
    eval_file = run_dir / EVAL_FILE
    if eval_path.resolve() != eval_file.resolve():
        atomic_write(stage / EVAL_FILE, lambda tmp: shutil.copyfile(eval_path, tmp))
        eval_file = stage / EVAL_FILE
        names.append(EVAL_FILE)
    claims = claims_from_eval(result, eval_sha256=sha256_file(eval_file))
    zoo = config.get(CONFIG_BLOCK) or {}
    config = dict(config, **{CONFIG_BLOCK: dict(zoo, weights_sha256=result.model["weights_sha256"], claims=claims)})
    card = _run_card_data(config, claims, result.flags, hub_repo)
    (stage / FIGURES_DIR).mkdir()
    card.figures = _draw_figures(stage, card, records, grad_stats)
    if cka is not None:
        card.cka = _cka_summary(cka[0], card.model_name)
        _draw_cka(stage, cka[0], card.cka)
        card.figures["cka_nat_vs_adv"] = CKA_FIGURE
    readme = write_text_atomic(stage / CARD_FILE, render_card(card))
    config[CONFIG_BLOCK]["card"] = {
        "readme_sha256": sha256_file(readme),
        "figures": {rel: sha256_file(stage / rel) for rel in sorted(card.figures.values())},
    }
    if cka is not None:  # the data behind the CKA figure: push sends it only beside this card
        config[CONFIG_BLOCK]["card"]["analysis"] = {CKA_ANALYSIS_FILE: cka[1]}
    write_json_atomic(stage / CONFIG_FILE, config)
    return [*names, CARD_FILE, CONFIG_FILE]


def _run_card_data(config: dict[str, Any], claims: dict[str, Any], flags: list[str], hub_repo: str | None) -> CardData:
    from ..models.zoo import SMALL_SCALE_NOTE, find_entry

    zoo = config[CONFIG_BLOCK]
    architecture = config["architecture"]
    # num_classes/global_pool are recorded by timm for every model; other model args make it a variant
    model_args = {k: v for k, v in (config.get("model_args") or {}).items() if k not in ("num_classes", "global_pool")}
    short, human = arch_names(architecture)
    dataset = zoo.get("dataset") or claims["dataset"]["name"]
    method = zoo.get("method", "unknown")
    entry = find_entry(zoo["model_name"]) if zoo.get("model_name") else None
    full_size = not model_args and entry is not None and entry.architecture == architecture
    arch_label = (
        human if not model_args else f"{human} (reduced: {', '.join(f'{k}={v}' for k, v in model_args.items())})"
    )
    zoo_method, variant = ("cure", "eff") if method == "cure_eff" else (method, "")
    rows = reported_for(zoo_method, short, dataset, variant=variant) if short else []
    notes = []
    if model_args:
        notes.append(
            f"This is a reduced {human} ({', '.join(f'{k}={v}' for k, v in model_args.items())}), not the paper's "
            f"architecture: its numbers say nothing about what the method reaches at full size."
        )
    recipe = zoo.get("recipe")
    name = zoo.get("model_name") or zoo.get("recipe_name") or (recipe or {}).get("name") or architecture
    small_scale = entry is not None and bool(entry.train_subset)
    return CardData(
        model_name=name,
        method=method,
        architecture=architecture,
        arch_label=arch_label,
        dataset=dataset,
        license=(entry.license if entry else "apache-2.0"),
        registered_name=entry.name if full_size else None,
        hub_repo=hub_repo,
        model_args=model_args,
        params=param_count(architecture, config.get("num_classes", 10), model_args),
        weights_sha256=zoo["weights_sha256"],
        claims=claims,
        flags=list(flags),
        paper_rows=rows,
        paper_comparable=full_size,
        recipe=recipe,
        recipe_name=zoo.get("recipe_name") or (recipe or {}).get("name"),
        preset=zoo.get("preset"),
        preset_departures=zoo.get("preset_departures") or {},
        training=zoo.get("training"),
        init=zoo.get("init"),
        data=zoo.get("data"),
        code_revision=zoo.get("code_revision"),
        versions=zoo.get("versions") or {},
        notes=notes,
        scale_note=SMALL_SCALE_NOTE if small_scale else "",
    )


def _draw_figures(
    out_dir: Path, card: CardData, records: list[dict[str, Any]], stats: list[dict[str, Any]]
) -> dict[str, str]:
    """Draw the card's figures into ``out_dir/figures``; returns figure key -> path relative to ``out_dir``."""
    from ..analysis.gradstats import plot_grad_stats
    from .plots import plot_tradeoff, plot_training_curves

    figures: dict[str, str] = {}
    fig_dir = out_dir / FIGURES_DIR
    if plot_training_curves(
        records, fig_dir / "training_curves.png", f"{card.model_name}: held-out accuracy per epoch"
    ):
        figures["training_curves"] = f"{FIGURES_DIR}/training_curves.png"
    if stats and plot_grad_stats(stats, fig_dir / "grad_stats.png", f"{card.model_name}: gradients during training"):
        figures["grad_stats"] = f"{FIGURES_DIR}/grad_stats.png"
    results = card.claims["results"]
    short, _ = arch_names(card.architecture)
    if card.scale_note:  # the paper's baselines are full-size models: no picture that puts this one among them
        return figures
    for metric in TRADEOFF_METRICS:
        if metric not in results or "nat" not in results:
            continue
        found = tradeoff_baselines(short, card.dataset, metric) if short else None
        if found is None:
            found = tradeoff_baselines("resnet18", card.dataset, metric)  # the paper's main baseline table
        if found is None:
            continue
        table, rows = found
        point = (results["nat"]["accuracy"], results[metric]["accuracy"])
        plot_tradeoff(
            point, card.model_name, rows, metric, table, fig_dir / "tradeoff.png", model_n=results["nat"]["n"]
        )
        figures["tradeoff"] = f"{FIGURES_DIR}/tradeoff.png"
        break
    return figures


def _cka_summary(data: dict[str, Any], model_name: str) -> dict[str, Any]:
    """What the card says about the natural-vs-adversarial CKA (checked by ``read_cka_analysis``)."""
    images = data["images"]
    diagonal = [float(row[i]) for i, row in enumerate(data["cka"])]
    lowest = min(range(len(diagonal)), key=diagonal.__getitem__)
    return {
        "model": model_name,
        "weights_sha256": data["models"]["a"]["weights_sha256"],
        "dataset": images.get("dataset"),
        "split": images.get("split", "test"),
        "n_used": images["n_used"],
        "attack": images["b_inputs"],
        "eps": images.get("eps"),
        "seed": images.get("seed"),
        "estimator": data["estimator"].get("kind", "linear CKA"),
        "batch_size": data["estimator"].get("batch_size"),
        "layers": len(diagonal),
        "mean_diagonal": sum(diagonal) / len(diagonal),
        "lowest_layer": data["layers_a"][lowest],
        "lowest_value": diagonal[lowest],
        "figure": CKA_FIGURE,
        "source": CKA_ANALYSIS_FILE,
    }


def _draw_cka(out_dir: Path, data: dict[str, Any], summary: dict[str, Any]) -> None:
    """``figures/cka_nat_vs_adv.png``: the analysis' own heatmap (:meth:`CKAResult.plot`), drawn again."""
    from ..analysis.cka import CKAResult
    from ..evaluation.metrics import METRICS

    attack = METRICS.get(summary["attack"], (summary["attack"],))[0]
    title = f"{summary['model']}: linear CKA, natural vs {attack} images ({summary['n_used']} images)"
    CKAResult.from_json(data).plot(out_dir / CKA_FIGURE, title=title)
