"""A model's claims, machine-readable: what ``cure-zoo card`` stores and ``cure-zoo verify`` re-measures.

The claims live in ``config.json`` under ``cure_zoo.claims`` and point at the evaluation JSON that produced
them (``eval.json`` beside the weights, with its sha256), so nothing ever parses the card's prose::

    "claims": {
      "schema": "cure_zoo.claims/1",
      "weights_sha256": "<sha256 of model.safetensors the numbers were measured on>",
      "eval_file": "eval.json", "eval_sha256": "<sha256 of that file>",
      "dataset": {"name", "split", "source", "n_examples", "indices": [[start, stop), ...]},
      "protocol": {... the evaluation's full protocol: eps, attacks and their settings, seed, batch sizes,
                   device, dtype, library versions ...},
      "results": {"nat": {"accuracy", "correct", "n", "ci95"}, "pgd20": {...}, ..., "nrr_cw": x, ...}
    }

The evaluation JSON (schema ``cure_zoo.eval/1``) additionally holds the per-sample correctness masks, which
``verify`` uses to compare sample by sample on the same images.
"""

from __future__ import annotations

from typing import Any

from ..errors import CureZooError
from ..rundir import EVAL_FILE

CLAIMS_SCHEMA = "cure_zoo.claims/1"


def claims_from_eval(result: Any, *, eval_sha256: str, eval_file: str = EVAL_FILE) -> dict[str, Any]:
    """The claims block for an :class:`~cure_zoo.evaluation.EvalResult` saved as ``eval_file``."""
    from ..evaluation.result import indices_to_ranges

    dataset = dict(result.dataset, indices=indices_to_ranges(result.indices))
    results = {k: (dict(v) if isinstance(v, dict) else v) for k, v in result.results.items()}
    for value in results.values():
        if isinstance(value, dict):
            value.pop("time_s", None)  # how long it took is not a claim
    return {
        "schema": CLAIMS_SCHEMA,
        "weights_sha256": result.model.get("weights_sha256"),
        "eval_file": eval_file,
        "eval_sha256": eval_sha256,
        "dataset": dataset,
        "protocol": result.protocol,
        "results": results,
    }


def read_claims(zoo_config: dict[str, Any], where: str) -> dict[str, Any]:
    """The claims block of a config's ``cure_zoo`` section, checked for shape; a clear error if absent."""
    claims = (zoo_config or {}).get("claims")
    if not claims:
        raise CureZooError(
            f"{where} publishes no claims (config.json has no cure_zoo.claims), so there is nothing to verify; "
            f"claims are written by 'cure-zoo card RUN_DIR' from an evaluation"
        )
    if claims.get("schema") != CLAIMS_SCHEMA:
        raise CureZooError(
            f"{where}: claims schema {claims.get('schema')!r} is not {CLAIMS_SCHEMA!r}; upgrade cure-zoo or "
            f"regenerate the card with 'cure-zoo card'"
        )
    for key in ("weights_sha256", "dataset", "protocol", "results"):
        if key not in claims:
            raise CureZooError(f"{where}: the claims block lacks {key!r}; regenerate it with 'cure-zoo card'")
    return claims


def protocol_norm(protocol: dict[str, Any], what: str) -> str:
    """The threat model (``Linf`` or ``L2``) an evaluation protocol was measured under: its ``norm``
    (``Linf`` in evaluations from before L2 existed), which every attack's own ``norm`` must repeat. ``what``
    names the protocol in the one-line error."""
    norm = protocol.get("norm", "Linf")
    for name, spec in (protocol.get("attacks") or {}).items():
        if isinstance(spec, dict) and spec.get("norm", norm) != norm:
            raise CureZooError(
                f"{what}: attack {name} ran under {spec['norm']} but the protocol says {norm}; the evaluation is "
                f"not one cure-zoo eval wrote"
            )
    return str(norm)


def accuracy_claims(claims: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-attack accuracy claims (``nat``, ``pgd20``, ``aa``, ``worst``...), without derived numbers."""
    return {k: v for k, v in claims["results"].items() if isinstance(v, dict)}


def derived_claims(claims: dict[str, Any]) -> dict[str, float]:
    """The derived numbers (``nrr_cw``, ``nrr_aa``, ``sum_aa``)."""
    return {k: float(v) for k, v in claims["results"].items() if not isinstance(v, dict)}
