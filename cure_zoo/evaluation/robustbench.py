"""A RobustBench leaderboard entry (its ``model_info/<dataset>/<threat model>/<Name>.json`` format) from an
evaluation result.

Fields, as RobustBench's own entries write them: ``link``, ``name`` (the paper's title), ``authors``,
``additional_data`` (bool), ``number_forward_passes`` (int), ``dataset``, ``venue``, ``architecture``,
``eps`` (``"8/255"`` under L-inf, ``"0.5"`` under L2), ``clean_acc``, ``reported``, ``autoattack_acc``
(percentages as strings with two decimals), and optionally ``footnote``, ``unreliable`` (bool),
``external`` (a robust accuracy from a stronger, external evaluation; the zoo never fills it) and
``corruptions_acc`` (for the corruptions leaderboard: the mean over the 15 CIFAR-10-C corruptions and 5
severities).

RobustBench's protocol is AutoAttack standard on the full test split (10,000 CIFAR images). An evaluation
that is anything else is refused, or, with ``allow_nonstandard=True``, written with a ``footnote`` that
says exactly how it differs, so the entry can never pass for a leaderboard number.
"""

from __future__ import annotations

from typing import Any

from ..errors import CureZooError
from ..rundir import CONFIG_BLOCK, CONFIG_FILE
from .protocol import eps_label
from .result import EvalResult

# The training methods' papers (RobustBench's link/name/authors/venue describe the method's paper).
METHOD_PAPERS = {
    "cure": (
        "https://arxiv.org/abs/2401.14948",
        "Conserve-Update-Revise to Cure Generalization and Robustness Trade-off in Adversarial Training",
        "Shruthi Gowda, Bahram Zonooz, Elahe Arani",
        "ICLR 2024",
    ),
    "at": (
        "https://arxiv.org/abs/1706.06083",
        "Towards Deep Learning Models Resistant to Adversarial Attacks",
        "Aleksander Madry, Aleksandar Makelov, Ludwig Schmidt, Dimitris Tsipras, Adrian Vladu",
        "ICLR 2018",
    ),
    "trades": (
        "https://arxiv.org/abs/1901.08573",
        "Theoretically Principled Trade-off between Robustness and Accuracy",
        "Hongyang Zhang, Yaodong Yu, Jiantao Jiao, Eric P. Xing, Laurent El Ghaoui, Michael I. Jordan",
        "ICML 2019",
    ),
    "st": ("", "Standardly trained model", "", "N/A"),
}
FULL_TEST_SPLIT = {"cifar10": 10_000, "cifar100": 10_000, "svhn": 26_032}


def run_zoo_config(spec: str | None) -> dict[str, Any]:
    """The ``cure_zoo`` block of a run directory's (or a .safetensors' neighbouring) config.json; {} else."""
    from pathlib import Path

    from ..models.loader import read_run_config

    if not spec or spec.startswith("hf-hub:"):
        return {}
    path = Path(spec)
    directory = path if path.is_dir() else path.parent if path.suffix == ".safetensors" else None
    if directory is None or not (directory / CONFIG_FILE).is_file():
        return {}
    return read_run_config(directory).get(CONFIG_BLOCK) or {}


def _pct(value: float) -> str:
    return f"{value:.2f}"


def nonstandard_reasons(result: EvalResult) -> list[str]:
    """How ``result`` differs from RobustBench's protocol (empty: it is RobustBench's)."""
    reasons = []
    aa = result.protocol.get("attacks", {}).get("aa")
    if aa is None:
        reasons.append("no AutoAttack ('aa') was run")
    elif aa.get("version") != "standard":
        reasons.append(f"AutoAttack version {aa.get('version')!r}, not standard")
    name, n = result.dataset.get("name"), int(result.dataset.get("n_examples", 0))
    full = FULL_TEST_SPLIT.get(name)
    if result.dataset.get("split") != "test" or full is None or n != full:
        size = f"{full:,} images" if full else "size unknown"
        split = result.dataset.get("split")
        reasons.append(f"evaluated on {n:,} {name} {split} images, not the full test split ({size})")
    elif str(result.dataset.get("source", "")).startswith("bundled"):
        reasons.append("evaluated on the bundled subset, not the full test split")
    if result.protocol.get("world_size", 1) != 1 or result.protocol.get("chunks"):
        reasons.append("AutoAttack ran on shards or chunks (its randomness is drawn per batch)")
    return reasons


def robustbench_entry(
    result: EvalResult,
    *,
    method: str | None = None,
    architecture: str | None = None,
    reported: float | None = None,
    corruptions_acc: float | None = None,
    additional_data: bool = False,
    footnote: str | None = None,
    allow_nonstandard: bool = False,
    zoo_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The RobustBench ``model_info`` entry of ``result``. ``method``/``architecture`` default to the zoo
    entry of the evaluated model (its registered name, or ``zoo_config``: the ``cure_zoo`` block of a run
    directory's config.json, see :func:`run_zoo_config`) where it has one; ``reported`` (the paper's robust
    accuracy) defaults to the measured AutoAttack accuracy, as RobustBench does for models it evaluates."""
    from ..models.zoo import ARCHITECTURES, find_entry

    reasons = nonstandard_reasons(result)
    if reasons and not allow_nonstandard:
        raise CureZooError(
            f"not a RobustBench evaluation: {'; '.join(reasons)}; run cure-zoo eval with --attacks nat,aa on the "
            f"full test split (--data-dir), or pass --robustbench-nonstandard to write it with a footnote"
        )
    if "aa" not in result.results or "nat" not in result.results:
        raise CureZooError("a RobustBench entry needs both 'nat' and 'aa' in the evaluation; add them to --attacks")
    zoo_config = zoo_config or {}
    entry = find_entry(zoo_config.get("model_name") or result.model.get("name") or "")
    method = method or zoo_config.get("method") or (entry.method if entry else None)
    link, title, authors, venue = METHOD_PAPERS.get(method or "", ("", "", "", ""))
    if architecture is None:
        architecture = ARCHITECTURES[entry.arch][1] if entry else result.model.get("name", "")
    norm = result.protocol.get("norm", "Linf")
    eps = float(result.protocol["attacks"]["aa"]["eps"])
    aa = result.accuracy("aa")
    notes = [footnote] if footnote else []
    if entry is not None and entry.train_subset:
        notes.append(f"Trained on a {entry.train_subset} subset of the training set ({result.model.get('name')}).")
    if reasons:
        notes.append("Not RobustBench's protocol: " + "; ".join(reasons) + ".")
    out: dict[str, Any] = {
        "link": link,
        "name": title,
        "authors": authors,
        "additional_data": bool(additional_data),
        "number_forward_passes": 1,
        "dataset": result.dataset["name"],
        "venue": venue,
        "architecture": architecture,
        "eps": eps_label(eps, norm),
        "clean_acc": _pct(result.accuracy("nat")),
        "reported": _pct(aa if reported is None else reported),
    }
    if notes:
        out["footnote"] = " ".join(notes)
    out["autoattack_acc"] = _pct(aa)
    out["unreliable"] = bool(reasons)
    if corruptions_acc is not None:
        out["corruptions_acc"] = _pct(corruptions_acc)
    return out
