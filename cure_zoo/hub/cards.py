"""The model card: ONE template, filled by code, for every model in the zoo.

:func:`render_card` turns a :class:`CardData` into a Hub README: YAML front matter (``library_name: timm``,
licence, tags, datasets, metrics and a ``model-index`` whose results carry the protocol in their ``args``;
never ``verified: true``), a usage snippet, the measured results with n, 95% intervals, protocol and
library versions, the paper's numbers for the same model clearly labelled "reported in the paper", the
training recipe, figures, verification, limitations and the citation.

A card either describes measured weights (``CardData.claims`` set, from ``cure-zoo card RUN_DIR``) or a
registered model without weights (``claims`` None): then it says so plainly and shows only the paper's
numbers. Building the data is the job of :mod:`.card_builder` (runs) and :mod:`.registry_cards` (the
registry); this module only renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ..evaluation.metrics import METRICS
from ..models.zoo import METHODS
from ..tables import markdown_table
from .paper_results import ARXIV_ID, ARXIV_URL, PAPER_AUTHORS, PAPER_TITLE, PAPER_VENUE, PaperRow

HF_DATASETS = {"cifar10": "uoft-cs/cifar10", "cifar100": "uoft-cs/cifar100", "svhn": "ufldl-stanford/svhn"}
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN"}
MODEL_INDEX_KEYS = ("nat", "pgd20", "pgd100", "cw20", "aa", "nrr_cw", "nrr_aa")
PAPER_COLUMNS = ("nat", "pgd20", "pgd100", "cw20", "aa", "nrr_cw", "nrr_aa", "sum_aa")
TABLE3_COLUMNS = ("nat_best", "nat_last", "nat_delta", "aa_best", "aa_last", "aa_delta")


@dataclass
class CardData:
    """Everything one card shows. ``claims`` is the machine-readable claims block (see :mod:`.claims`)."""

    model_name: str  # the card's title: zoo name, or the run's name
    method: str  # st, at, trades, cure, cure_eff
    architecture: str  # timm entrypoint, e.g. cifar_resnet18
    arch_label: str  # "ResNet-18", or "ResNet-18 (reduced width: widths=[16, 32, 64, 128])"
    dataset: str
    license: str = "apache-2.0"
    registered_name: str | None = None  # a zoo name that builds exactly this architecture
    hub_repo: str | None = None  # ORG/NAME where the card is (to be) published
    model_args: dict[str, Any] = field(default_factory=dict)
    params: int | None = None
    weights_sha256: str | None = None
    claims: dict[str, Any] | None = None
    flags: list[str] = field(default_factory=list)  # warnings the evaluation raised
    paper_rows: list[PaperRow] = field(default_factory=list)
    paper_comparable: bool = True  # False: the paper's numbers are for a different (full-size) model
    recipe: dict[str, Any] | None = None  # resolved recipe (or the planned one, for unpublished models)
    recipe_name: str | None = None
    preset: str | None = None
    preset_departures: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] | None = None  # the run's training summary
    init: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    code_revision: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)  # "training_curves"/"grad_stats"/"tradeoff" -> path
    cka: dict[str, Any] | None = None  # natural-vs-adversarial CKA summary (card_builder._cka_summary), if measured
    published_revision: str | None = None  # registry cards of published weights: the pinned Hub commit
    published_claims: dict[str, float] = field(default_factory=dict)  # ... and their headline numbers
    notes: list[str] = field(default_factory=list)  # extra limitations specific to this model
    scale_note: str = ""  # small-scale models: shown as a banner under the title, and among the limitations

    @property
    def measured(self) -> bool:
        return self.claims is not None


# ---------------------------------------------------------------------------------------------------------
# small formatting helpers


def _pct(value: float) -> str:
    return f"{value:.2f}"


def _eps(value: float | None) -> str:
    if value is None:
        return "-"
    from ..evaluation.protocol import eps_label

    return eps_label(value)


def _attack_settings(spec: dict[str, Any]) -> str:
    """One line describing an attack entry of the protocol."""
    kind = spec.get("kind")
    if kind == "nat":
        return "clean test images"
    if kind == "autoattack":
        subs = ", ".join(spec.get("attacks", []))
        return f"L-inf eps {_eps(spec.get('eps'))}, version {spec.get('version')} ({subs}), seed {spec.get('seed')}"
    if kind == "pgd":
        loss = {"ce": "cross-entropy", "cw": f"CW margin (confidence {spec.get('confidence', 50):g})"}.get(
            spec.get("loss"), spec.get("loss")
        )
        return (
            f"L-inf eps {_eps(spec.get('eps'))}, {spec.get('steps')} steps of {spec.get('step_size')}, {loss}, "
            f"random start (seed {spec.get('seed')})"
        )
    return ", ".join(f"{k} {v}" for k, v in spec.items())


def _indices_text(dataset: dict[str, Any]) -> str:
    ranges = dataset.get("indices") or []
    if ranges and isinstance(ranges[0], list):
        return ", ".join(f"{a}-{b - 1}" for a, b in ranges)
    return f"{len(ranges)} listed indices"


# ---------------------------------------------------------------------------------------------------------
# front matter


def _model_index(card: CardData) -> list[dict[str, Any]]:
    task = {"type": "image-classification", "name": "Image Classification"}
    dataset = {
        "type": HF_DATASETS.get(card.dataset, card.dataset),
        "name": DATASET_NAMES.get(card.dataset, card.dataset),
        "split": "test",
    }
    metrics = []
    if card.measured:
        claims = card.claims
        attacks = claims["protocol"].get("attacks", {})
        common = {"n_examples": claims["dataset"]["n_examples"], "images": _indices_text(claims["dataset"])}
        for key in MODEL_INDEX_KEYS:
            value = claims["results"].get(key)
            if value is None:
                continue
            if isinstance(value, dict):
                args = {**_protocol_args(attacks.get(key, {})), **common, "ci95": [round(v, 2) for v in value["ci95"]]}
                metrics.append(_metric(key, value["accuracy"], args))
            else:
                metrics.append(_metric(key, value, {"definition": METRICS[key][1], **common}))
        source = {"name": "measured by cure-zoo eval (see eval.json)", "url": "https://arxiv.org/abs/" + ARXIV_ID}
        return [
            {
                "name": card.model_name,
                "results": [{"task": task, "dataset": dataset, "metrics": metrics, "source": source}],
            }
        ]
    # No weights: the paper's numbers for this model (each metric from the first table printing it), with a
    # source that says exactly that.
    metrics, tables = [], []
    n_test = 26032 if card.dataset == "svhn" else 10000
    for key in MODEL_INDEX_KEYS:
        row = next((r for r in card.paper_rows if key in r.metrics), None)
        if row is not None:
            metrics.append(_metric(key, row.metrics[key], {"reported_in": f"Table {row.table}", "n_examples": n_test}))
            tables.append(row.table)
    if not metrics:
        return []
    where = ", ".join(str(t) for t in dict.fromkeys(tables))
    source = {"name": f"reported in the paper (Table {where}), not measured by cure-zoo", "url": ARXIV_URL}
    return [
        {"name": card.model_name, "results": [{"task": task, "dataset": dataset, "metrics": metrics, "source": source}]}
    ]


def _protocol_args(spec: dict[str, Any]) -> dict[str, Any]:
    args = {k: v for k, v in spec.items() if k not in ("kind",)}
    if "eps" in args:
        args["eps"] = _eps(args["eps"])
    if args:
        args["norm"] = "Linf"
    return args


def _metric(key: str, value: float, args: dict[str, Any]) -> dict[str, Any]:
    kind = "accuracy" if key == "nat" else ("nrr" if key.startswith(("nrr", "sum")) else "robust_accuracy")
    return {"type": kind, "name": METRICS[key][0], "value": round(float(value), 2), "args": args, "verified": False}


def front_matter(card: CardData) -> str:
    tags = [
        "timm",
        "image-classification",
        "adversarial-robustness",
        "adversarial-training",
        "robustness",
        "cure",
        card.dataset,
        "safetensors",
        "pytorch",
    ]
    meta: dict[str, Any] = {
        "library_name": "timm",
        "license": card.license,
        "pipeline_tag": "image-classification",
        "tags": tags,
        "datasets": [HF_DATASETS.get(card.dataset, card.dataset)],
        "metrics": ["accuracy"],
    }
    index = _model_index(card)
    if index:
        meta["model-index"] = index
    return "---\n" + yaml.dump(meta, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


class _RecipeDumper(yaml.SafeDumper):
    """Block style, with short lists (milestones, widths) on one line."""


_RecipeDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


class _NoAliasDumper(yaml.SafeDumper):
    """Writes repeated objects out in full (the Hub's front matter is read by people too)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


# ---------------------------------------------------------------------------------------------------------
# body sections


def _title(card: CardData) -> str:
    what = (
        f"{card.arch_label} trained on {DATASET_NAMES.get(card.dataset, card.dataset)} with "
        f"{METHODS.get(card.method, card.method)}"
    )
    lines = [
        f"# {card.model_name}",
        "",
        f"{what}. Part of cure-zoo, a timm model zoo of adversarially robust classifiers for the paper "
        f"*{PAPER_TITLE}* ({PAPER_VENUE}, [arXiv:{ARXIV_ID}]({ARXIV_URL})).",
        "",
    ]
    if card.scale_note:
        lines += [f"> **Small-scale model: {card.scale_note}.**", ""]
    if card.params:
        from ..data.catalog import get_dataset_info

        classes = get_dataset_info(card.dataset).num_classes
        lines += [f"Architecture: `{card.architecture}` ({classes} classes), {card.params:,} parameters.", ""]
    if card.measured:
        lines.append(f"Weights: `model.safetensors`, sha256 `{card.weights_sha256}`.")
    elif card.published_revision:
        lines.append(
            f"Weights are published in `{card.hub_repo}` at revision `{card.published_revision}`; the full card, "
            f"with the measured numbers, their protocol and intervals, is that repository's README. Headline "
            f"numbers (measured by cure-zoo): "
            + ", ".join(f"{METRICS.get(k, (k,))[0]} {_pct(v)}" for k, v in card.published_claims.items())
            + "."
        )
    else:
        numbers = (
            "Every number on this card is **reported in the paper**, not measured by cure-zoo on any weights."
            if card.paper_rows
            else "This card holds no accuracy numbers: nothing was measured, and the paper reports none for it."
        )
        lines.append(
            "**No trained weights are published for this model yet.** `pretrained=True` fails with an error that "
            "says so. " + numbers
        )
    return "\n".join(lines)


def _usage(card: CardData) -> str:
    spec = f"hf-hub:{card.hub_repo}" if card.hub_repo else card.registered_name
    lines = ["## Usage", "", "```python", "import timm", "import cure_zoo  # registers the zoo's models with timm", ""]
    if card.registered_name and card.hub_repo:
        lines.append(f'model = timm.create_model("{card.registered_name}", pretrained=True)')
        lines.append(f'# or, pinned to this repository: timm.create_model("{spec}", pretrained=True)')
    elif spec:
        lines.append(f'model = timm.create_model("{spec}", pretrained=True)')
    else:
        lines.append('model = cure_zoo.models.loader.load_model("path/to/run_dir").model  # a local run directory')
    lines += [
        "model.eval()  # inputs: images in [0, 1], NCHW, 32x32, no normalisation (the model has none)",
        "```",
        "",
        "The weights' sha256 is checked against `config.json` before they are loaded; a truncated or altered "
        "file is an error, never a silently different model.",
    ]
    if not card.measured:
        lines += [
            "",
            f"With no published weights, `pretrained=True` raises an error naming the way out: train it with "
            f"`torchrun recipes/train.py --recipe {card.recipe_name or card.model_name}` and publish it with "
            f"`cure-zoo push RUN_DIR --repo ORG/NAME` (then `CURE_ZOO_HF_ORG=ORG`).",
        ]
    return "\n".join(lines)


def _measured(card: CardData) -> str:
    claims = card.claims
    protocol, dataset = claims["protocol"], claims["dataset"]
    attacks = protocol.get("attacks", {})
    paper = card.paper_rows[0] if card.paper_rows and card.paper_comparable else None
    header = ["metric", "accuracy (%)", "95% CI (Wilson)", "correct / n", "attack"]
    if paper:
        header.append(f"reported in the paper (Table {paper.table})")
    rows = []
    for key, value in claims["results"].items():
        if not isinstance(value, dict):
            continue
        name = METRICS.get(key, (key, ""))[0]
        settings = _attack_settings(attacks[key]) if key in attacks else METRICS.get(key, ("", key))[1]
        if key == "worst":
            settings = "per-sample worst case over " + ", ".join(value.get("over", []))
        row = [
            name,
            _pct(value["accuracy"]),
            f"[{_pct(value['ci95'][0])}, {_pct(value['ci95'][1])}]",
            f"{value['correct']} / {value['n']}",
            settings,
        ]
        if paper:
            row.append(_pct(paper.metrics[key]) if key in paper.metrics else "-")
        rows.append(row)
    for key, value in claims["results"].items():
        if isinstance(value, dict):
            continue
        row = [METRICS.get(key, (key,))[0], _pct(value), "-", "-", METRICS.get(key, ("", key))[1]]
        if paper:
            row.append(_pct(paper.metrics[key]) if key in paper.metrics else "-")
        rows.append(row)
    versions = protocol.get("versions", {})
    dataset_name = DATASET_NAMES.get(dataset["name"], dataset["name"])
    lines = [
        "## Results (measured)",
        "",
        f"Measured by `cure-zoo eval` on **{dataset['n_examples']:,} images** of the {dataset_name} "
        f"{dataset.get('split', 'test')} split (official indices {_indices_text(dataset)}; "
        f"{dataset.get('source', '')}). Accuracies in percent; the interval is the 95% Wilson score interval.",
        "",
        markdown_table(header, rows),
        "",
        "Protocol: "
        + ", ".join(
            [
                f"L-inf, eps {_eps(protocol.get('eps'))}",
                f"inputs in {protocol.get('input_range', [0, 1])}",
                f"model in {protocol.get('model_mode', 'eval')} mode",
                f"seed {protocol.get('seed')}",
                f"batch size {protocol.get('batch_size')}"
                + (f" (AutoAttack {protocol['aa_batch_size']})" if protocol.get("aa_batch_size") else ""),
                f"device {protocol.get('device')}"
                + (f" ({protocol['device_name']})" if protocol.get("device_name") not in (None, "", "cpu") else ""),
                f"dtype {protocol.get('dtype')}",
            ]
        )
        + ".",
        "",
        "Library versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        "",
        f"The same numbers, with the full protocol and per-image results, are in `eval.json` (sha256 "
        f"`{claims['eval_sha256']}`) and in `config.json` under `cure_zoo.claims`; `cure-zoo verify` reads them "
        f"from there.",
    ]
    if dataset["n_examples"] < 10000:
        lines += [
            "",
            f"Measured on {dataset['n_examples']:,} images, not the full test split: the intervals are wide "
            f"accordingly, and the numbers are not directly comparable to full-test-set results.",
        ]
    if card.flags:
        lines += ["", "Warnings raised during the evaluation:", ""] + [f"- {f}" for f in card.flags]
    if paper is None and card.paper_rows:
        lines += ["", "The paper's numbers below are for the full-size model and are not comparable to these."]
    return "\n".join(lines)


def _paper_section(card: CardData) -> str:
    heading = "## Reported in the paper" if card.measured else "## Results reported in the paper"
    if not card.paper_rows:
        why = (
            "natural training is CURE's starting point and appears in no table"
            if card.method == "st"
            else ("the paper reports no numbers for this (method, architecture, dataset)")
        )
        return f"{heading}\n\nNone: {why}."
    intro = (
        "These numbers are **reported in the paper** (Gowda et al., ICLR 2024) for the paper's own model, in percent "
        "on the full test split. They were not measured by cure-zoo"
        + ("." if card.measured else ", and no weights exist here to measure.")
    )
    if not card.paper_comparable:
        intro += " They are for the full-size architecture, which this model is not."
    lines = [heading, "", intro, ""]
    main = [r for r in card.paper_rows if r.table != 3]
    if main:
        columns = [c for c in PAPER_COLUMNS if any(c in r.metrics for r in main)]
        header = ["reported in", "method"] + [METRICS[c][0] for c in columns]
        merged: dict[tuple, list[int]] = {}  # identical rows printed in several tables: one line
        for r in main:
            merged.setdefault((r.method, tuple(sorted(r.metrics.items()))), []).append(r.table)
        rows = [
            [("Table " if len(t) == 1 else "Tables ") + ", ".join(map(str, t)), method]
            + [_pct(dict(values)[c]) if c in dict(values) else "-" for c in columns]
            for (method, values), t in merged.items()
        ]
        lines += [markdown_table(header, rows), ""]
    overfit = [r for r in card.paper_rows if r.table == 3]
    if overfit:
        header = ["reported in", "Nat best", "Nat last", "Nat delta", "AA best", "AA last", "AA delta"]
        rows = [
            [f"Table {r.table}"] + [_pct(r.metrics[c]) if c in r.metrics else "-" for c in TABLE3_COLUMNS]
            for r in overfit
        ]
        lines += ["Robust overfitting (Table 3: best vs last epoch):", "", markdown_table(header, rows), ""]
    notes = list(dict.fromkeys(n for r in card.paper_rows for n in r.notes))
    if notes:
        lines += ["Notes on the printed numbers (kept exactly as printed):", ""] + [f"- {n}" for n in notes] + [""]
    lines.append(
        "C&W in the paper is the L-inf CW-margin PGD (confidence 50), which is what `cw20` measures; NRR is the "
        "harmonic mean of natural and robust accuracy."
    )
    return "\n".join(lines)


def _figures(card: CardData) -> str:
    if not card.figures.keys() & {"training_curves", "grad_stats", "tradeoff"}:  # the CKA has its own section
        return ""
    lines = ["## Figures", ""]
    if "training_curves" in card.figures:
        lines += [
            f"![natural and PGD test accuracy per epoch]({card.figures['training_curves']})",
            "",
            "Natural and PGD-20 accuracy per epoch on the run's held-out images (the training monitor, not the "
            "evaluation above); the dotted line marks the best robust epoch. A gap between best and last is robust "
            "overfitting.",
            "",
        ]
    if "grad_stats" in card.figures:
        lines += [
            f"![gradient statistics per layer, early, middle and late in training]({card.figures['grad_stats']})",
            "",
            "Per parameter tensor, at the first, middle and last logged step: the mean gradient magnitude (top) and "
            "the percentage of gradient entries updated, i.e. not zeroed by the RGP mask, or, for a method without "
            "the mask, the percentage that would pass it at the recipe's p (bottom); the paper's Fig. 6 and 10.",
            "",
        ]
    if "tradeoff" in card.figures:
        lines += [
            f"![natural vs robust accuracy among the paper's baselines]({card.figures['tradeoff']})",
            "",
            "This model (star, measured here) among the paper's baselines (dots, reported in the paper).",
        ]
    return "\n".join(lines).rstrip()


def _cka_section(card: CardData) -> str:
    """The paper's Fig. 3 for this model: its layers on natural images vs on its own adversarial images."""
    c = card.cka
    if not c:
        return ""
    attack = METRICS.get(c["attack"], (c["attack"],))[0]
    crafted = f"L-inf eps {_eps(c['eps'])}" if c.get("eps") is not None else "L-inf"
    if c.get("seed") is not None:
        crafted += f", random start seed {c['seed']}"
    dataset = DATASET_NAMES.get(c["dataset"], c["dataset"])
    return "\n".join(
        [
            "## Representation similarity: natural vs adversarial images",
            "",
            f"Linear CKA (the paper's Sec. 3.2 and Fig. 3) between every layer of this model (weights sha256 "
            f"`{c['weights_sha256'][:12]}...`) on natural images and every layer of the same model on its "
            f"{attack} adversarial images ({crafted}, crafted against this model): {c['n_used']:,} {dataset} "
            f"{c['split']} images, {c['estimator']}"
            + (f", batches of {c['batch_size']}" if c.get("batch_size") else "")
            + ". Measured by `cure-zoo analyze cka` (not reported in the paper).",
            "",
            f"Mean diagonal CKA (each of the {c['layers']} layers against itself): **{c['mean_diagonal']:.3f}**; "
            f"lowest at `{c['lowest_layer']}` ({c['lowest_value']:.3f}). 1 means the attack leaves a layer's "
            "representation unchanged up to rotation and scale; lower means it moves it.",
            "",
            f"![linear CKA between layers on natural and on adversarial images]({c['figure']})",
            "",
            f"The matrix is in `{c['source']}`.",
        ]
    )


def _training(card: CardData) -> str:
    lines = ["## Training", ""]
    if card.recipe is None:
        lines.append("No recipe in this repository trains this model.")
        return "\n".join(lines)
    if card.measured:
        lines.append(
            f"Trained with `recipes/train.py` from recipe `{card.recipe_name}`"
            + (f", CURE preset `{card.preset}`" if card.preset else "")
            + "; the values below are the fully resolved recipe, including any `--set` overrides."
        )
    else:
        lines.append(
            f"The recipe that will train it: `torchrun --nproc_per_node=N recipes/train.py --recipe "
            f"{card.recipe_name}`" + (f" (CURE preset `{card.preset}`)." if card.preset else ".")
        )
    if card.preset_departures:
        lines.append(
            "Departures from the preset: " + ", ".join(f"`{k}` = {v}" for k, v in card.preset_departures.items()) + "."
        )
    if card.init:
        lines.append(f"Starting weights: `{card.init.get('spec')}` (sha256 `{card.init.get('sha256')}`).")
    if card.data:
        lines.append("Data: " + "; ".join(f"{k}: {v}" for k, v in card.data.items() if v is not None) + ".")
    if card.training:
        t = card.training
        summary = [
            f"{t.get('epochs')} epochs",
            f"{t.get('global_steps')} steps",
            f"{t.get('world_size')} process(es)",
            f"device {t.get('device')}",
            f"{t.get('train_time_s')} s of training",
        ]
        lines.append("Run: " + ", ".join(summary) + ".")
        if "robust_overfitting_delta" in t:
            best = t.get("best_eval") or {}
            lines.append(
                f"Robust overfitting on the held-out monitor: best {best.get('metric')} {best.get('value'):.2f}% at "
                f"epoch {best.get('epoch')}, last minus best = {t['robust_overfitting_delta']:+.2f} points."
            )
    if card.code_revision:
        lines.append(f"Code revision: `{card.code_revision}`.")
    if card.versions:
        lines.append("Training library versions: " + ", ".join(f"{k} {v}" for k, v in card.versions.items()) + ".")
    where = (
        "also in `train_hparams.yaml`" if card.measured else f"from `recipes/{card.recipe_name}.yaml` and its preset"
    )
    lines += [
        "",
        f"Hyperparameters (the fully resolved recipe, {where}):",
        "",
        "```yaml",
        yaml.dump(card.recipe, Dumper=_RecipeDumper, sort_keys=False, width=1000).rstrip(),
        "```",
    ]
    return "\n".join(lines)


def _verify(card: CardData) -> str:
    spec = f"hf-hub:{card.hub_repo}" if card.hub_repo else (card.registered_name or "RUN_DIR")
    if not card.measured:
        return (
            "## Verify\n\nNothing to verify yet: there are no weights and no measured claims. Once published, "
            f"`cure-zoo verify {card.registered_name or card.model_name}` re-measures the card's claims."
        )
    return "\n".join(
        [
            "## Verify",
            "",
            "Re-measure every claim above with the same protocol, on your own machine:",
            "",
            "```bash",
            f"cure-zoo verify {spec}                    # all claimed images and attacks",
            f"cure-zoo verify {spec} --n-examples 500 --attacks nat,pgd20   # a quick subset",
            "```",
            "",
            "On the claim's own images a metric must match up to documented nondeterminism; on a subset, the claim "
            "must lie inside the 99% interval of the subset's measurement. Exit status 0: every claim holds; 1: one "
            "does not; 2: bad input (e.g. corrupted weights). The rule is spelled out in the cure-zoo README.",
        ]
    )


def _limitations(card: CardData) -> str:
    lines = [
        "## Limitations",
        "",
        "- Robust accuracy under attacks is an upper bound on true robustness, for L-inf perturbations of the "
        "stated eps only; it is not a certificate. AutoAttack is the reference number; PGD and CW-inf are weaker.",
        "- Nothing here measures robustness to other threat models (L2, patches), to natural corruptions, or "
        "to distribution shift.",
        f"- The model expects {DATASET_NAMES.get(card.dataset, card.dataset)}-like 32x32 images in [0, 1] without "
        "normalisation; normalised inputs silently change its accuracy and its robustness.",
        "- The paper's numbers and this zoo's settings differ where the paper and the authors' code disagree "
        "(the `paper` and `official` CURE presets; see the cure-zoo README).",
    ]
    if card.scale_note:
        lines.append(
            f"- Small scale: {card.scale_note}. Its numbers show what the method does at this scale and budget, "
            "not what it reaches on the full training set at full width."
        )
    lines += [f"- {note}" for note in card.notes]
    return "\n".join(lines)


def _citation() -> str:
    return "\n".join(
        [
            "## Citation",
            "",
            f"CURE here is Conserve-Update-Revise ({PAPER_AUTHORS}, {PAPER_VENUE}, arXiv:{ARXIV_ID}), not the "
            "2019 curvature-regularisation method also called CURE (Moosavi-Dezfooli et al., CVPR 2019).",
            "",
            "```bibtex",
            "@inproceedings{gowda2024conserve,",
            f"  title     = {{{PAPER_TITLE}}},",
            "  author    = {Gowda, Shruthi and Zonooz, Bahram and Arani, Elahe},",
            "  booktitle = {International Conference on Learning Representations (ICLR)},",
            "  year      = {2024},",
            f"  eprint    = {{{ARXIV_ID}}},",
            "  archivePrefix = {arXiv},",
            "}",
            "```",
        ]
    )


def render_card(card: CardData) -> str:
    """The README.md of one model: front matter and every section, in a fixed order."""
    sections = [
        _title(card),
        _usage(card),
        _measured(card) if card.measured else "",
        _paper_section(card),
        _figures(card),
        _cka_section(card),
        _training(card),
        _verify(card),
        _limitations(card),
        _citation(),
    ]
    header = "<!-- generated by cure_zoo.hub.cards from one template; edit the template, not this file -->"
    return front_matter(card) + "\n" + header + "\n\n" + "\n\n".join(s for s in sections if s) + "\n"
