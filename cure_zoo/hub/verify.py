"""``cure-zoo verify``: re-measure a published model's claims with the same protocol, and say which hold.

The model is loaded exactly as a user loads it (:func:`cure_zoo.models.loader.load_model`: a registered name,
``hf-hub:ORG/NAME``, a run directory), which checks the weights' sha256 against ``config.json``. The claims
come from ``config.json``'s ``cure_zoo.claims`` and the evaluation JSON it cites (``eval.json``, with the
per-image results); no prose is parsed (:func:`claim_source`). The claimed attacks are re-run with the
claimed norm, eps, seed and batch sizes on the claimed images (or the first N of them), in resumable chunks
(:func:`cure_zoo.evaluation.evaluate_chunked`); a re-measurement under another norm than the claim's is
refused. Which differences are allowed is decided by :mod:`.tolerance`, whose rules ``docs/verify.md``
states; this module puts the verdicts together into the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CureZooError
from ..evaluation.chunked import DEFAULT_CHUNK, evaluate_chunked
from ..io import sha256_file, write_json_atomic
from ..models import cache_dir, download_file, hub_config
from ..rundir import CONFIG_BLOCK, EVAL_FILE
from ..tables import text_table
from .claims import accuracy_claims, derived_claims, protocol_norm, read_claims
from .tolerance import DERIVED_INPUTS, Verdict, judge_accuracy, judge_derived


@dataclass
class VerifyReport:
    spec: str
    weights_sha256: str
    mode: str  # "same images" | "subset"
    dataset: dict[str, Any]
    verdicts: list[Verdict] = field(default_factory=list)
    measured: dict[str, Any] = field(default_factory=dict)  # the merged evaluation (cure_zoo.eval/1 JSON)

    @property
    def passed(self) -> bool:
        return bool(self.verdicts) and all(v.passed for v in self.verdicts)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "cure_zoo.verify/1",
            "spec": self.spec,
            "weights_sha256": self.weights_sha256,
            "mode": self.mode,
            "all_hold": self.passed,
            "verdicts": [asdict(v) for v in self.verdicts],
            "measured": self.measured,
        }


# ---------------------------------------------------------------------------------------------------------
# where the claims come from


@dataclass
class ClaimSource:
    claims: dict[str, Any]
    record: Any | None  # the cited EvalResult (per-image masks), None when eval.json is absent
    where: str


def _hub_id(loaded: Any) -> str | None:
    if loaded.spec.startswith("hf-hub:"):
        return loaded.spec.removeprefix("hf-hub:")
    entry = loaded.entry
    return entry.hf_hub_id if entry is not None and entry.weights_source == "hub" else None


def claim_source(loaded: Any) -> ClaimSource:
    """The claims block and the evaluation it cites, from the run directory or the Hub repo of ``loaded``."""
    from ..evaluation.result import EvalResult

    if loaded.zoo_config:  # a run directory or a local .safetensors with config.json
        base = Path(loaded.weights_file).parent
        where = str(base)
        claims = read_claims(loaded.zoo_config, where)
        eval_path: Path | None = base / claims.get("eval_file", EVAL_FILE)
        if not eval_path.is_file():
            eval_path = None
    else:
        hub_id = _hub_id(loaded)
        if hub_id is None:
            raise CureZooError(
                f"{loaded.spec} publishes no claims (its weights come from {loaded.weights_file}); verify a run "
                f"directory, a registered Hub model or hf-hub:ORG/NAME"
            )
        where = f"Hub repo {hub_id}"
        claims = read_claims(hub_config(hub_id, loaded.spec).get(CONFIG_BLOCK) or {}, where)
        try:
            eval_path = download_file(hub_id, claims.get("eval_file", EVAL_FILE), loaded.spec)
        except CureZooError:
            eval_path = None
    if claims["weights_sha256"] != loaded.weights_sha256:
        raise CureZooError(
            f"the claims in {where} were measured on weights with sha256 {str(claims['weights_sha256'])[:12]}..., "
            f"but the loaded weights are {str(loaded.weights_sha256)[:12]}...; the card is stale or the weights "
            f"were replaced"
        )
    record = None
    if eval_path is not None:
        actual = sha256_file(eval_path)
        if claims.get("eval_sha256") and actual != claims["eval_sha256"]:
            raise CureZooError(
                f"{claims.get('eval_file', EVAL_FILE)} in {where} is not the evaluation the claims cite (sha256 "
                f"{actual[:12]}... != {claims['eval_sha256'][:12]}...)"
            )
        record = EvalResult.load(eval_path)
    return ClaimSource(claims, record, where)


# ---------------------------------------------------------------------------------------------------------
# the command


def verify(
    spec: str,
    *,
    n_examples: int | None = None,
    attacks: list[str] | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    data_dir: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    state_root: Path | None = None,
    allow_tf32: bool | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> VerifyReport:
    """Re-measure ``spec``'s claims; docs/verify.md states the rules. Raises CureZooError for bad input."""
    from ..data.testsets import load_testset
    from ..evaluation.result import indices_to_ranges, ranges_to_indices
    from ..models.loader import load_model

    loaded = load_model(spec)
    source = claim_source(loaded)
    claims = source.claims
    protocol, cdata = claims["protocol"], claims["dataset"]
    norm = protocol_norm(protocol, f"the claims in {source.where}")  # re-measured under the same norm
    claimed_attacks = list(protocol.get("attacks", {}))
    wanted = attacks or claimed_attacks
    unknown = [a for a in wanted if a not in claimed_attacks]
    if unknown:
        raise CureZooError(f"{', '.join(unknown)} not claimed by {source.where}; claimed: {', '.join(claimed_attacks)}")
    wanted = [a for a in claimed_attacks if a in wanted]  # the claim's order
    claim_n = int(cdata["n_examples"])
    if n_examples is not None and not 0 < n_examples <= claim_n:
        raise CureZooError(f"--n-examples must be between 1 and the claim's {claim_n} images, got {n_examples}")
    images = load_testset(
        cdata["name"], data_dir=data_dir, n=n_examples or claim_n, notify=lambda m: log(f"notice: {m}")
    )
    claim_indices = ranges_to_indices(cdata["indices"])
    position = {idx: i for i, idx in enumerate(claim_indices)}
    mine = images.indices.tolist()
    missing = [i for i in mine if i not in position]
    if missing:
        raise CureZooError(
            f"the claim was measured on {cdata['name']} images {_ranges_text(cdata['indices'])}, but this machine's "
            f"images include others ({images.source}); pass --data-dir with the dataset the claim used, or a "
            f"smaller --n-examples"
        )
    same = mine == claim_indices
    positions = [position[i] for i in mine]
    bs = batch_size or int(protocol.get("batch_size") or 128)
    aa_bs = batch_size or int(protocol.get("aa_batch_size") or bs)
    log(
        f"claims: {source.where} ({cdata['name']} {cdata.get('split', 'test')}, {claim_n} images "
        f"{_ranges_text(cdata['indices'])}; {'' if norm == 'Linf' else norm + ' '}eps {protocol['eps']:.6f}, "
        f"seed {protocol['seed']})"
    )
    log(
        f"verifying on {len(mine)} images {_ranges_text(indices_to_ranges(mine))}: "
        f"{'the same images as the claim' if same else 'a subset of the claim images'}; attacks {', '.join(wanted)}"
    )
    result = evaluate_chunked(
        loaded,
        images,
        wanted,
        state_dir=Path(state_root) if state_root else cache_dir() / "verify",
        eps=float(protocol["eps"]),
        norm=norm,
        seed=int(protocol["seed"]),
        batch_size=bs,
        aa_batch_size=aa_bs,
        device=device,
        chunk_size=chunk_size,
        allow_tf32=allow_tf32,
        progress=progress,
        log=log,
    )
    measured_norm = protocol_norm(result.protocol, "the re-measurement")
    if measured_norm != norm:
        raise CureZooError(
            f"the claims in {source.where} were measured under {norm}, but the re-measurement ran under "
            f"{measured_norm}; robust accuracies under different norms are not comparable"
        )

    report = VerifyReport(spec, loaded.weights_sha256, "same images" if same else "subset", result.dataset)
    report.measured = result.to_json()
    record = source.record
    claim_acc = accuracy_claims(claims)
    by_metric: dict[str, Verdict] = {}
    for metric in [*wanted, "worst"]:
        if metric not in claim_acc or metric not in result.masks:
            continue
        if metric == "worst" and claim_acc["worst"].get("over") != result.results["worst"].get("over"):
            continue  # a worst case over other attacks is another quantity
        mask = record.masks.get(metric) if record is not None else None
        by_metric[metric] = judge_accuracy(metric, claim_acc[metric], mask, positions, result.masks[metric], same)
    verdicts = list(by_metric.values())
    for metric, value in derived_claims(claims).items():
        inputs = DERIVED_INPUTS.get(metric)
        if inputs and all(i in by_metric for i in inputs):
            verdicts.append(judge_derived(metric, value, claim_acc, by_metric))
    if not verdicts:
        raise CureZooError("nothing to compare: the claims hold none of the attacks asked for")
    report.verdicts = verdicts
    return report


def _ranges_text(ranges: list[list[int]]) -> str:
    return ", ".join(f"{a}-{b - 1}" if b - a > 1 else str(a) for a, b in ranges)


def format_report(report: VerifyReport) -> str:
    rows = [("metric", "claimed", "measured", "n", "result", "rule", "detail")]
    for v in report.verdicts:
        rows.append(
            (
                v.metric,
                f"{v.claimed:.2f}",
                f"{v.measured:.2f}",
                str(v.n),
                "PASS" if v.passed else "FAIL",
                v.rule,
                v.detail,
            )
        )
    lines = [text_table(rows)]
    failed = [v.metric for v in report.verdicts if not v.passed]
    lines.append("")
    lines.append(
        f"all {len(report.verdicts)} claims hold" if not failed else f"NOT VERIFIED: {', '.join(failed)} do not hold"
    )
    return "\n".join(lines)


def write_report(report: VerifyReport, path: str | Path) -> Path:
    return write_json_atomic(path, report.to_json())
