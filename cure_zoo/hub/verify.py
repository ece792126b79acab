"""``cure-zoo verify``: re-measure a published model's claims with the same protocol, and say which hold.

The model is loaded exactly as a user loads it (:func:`cure_zoo.models.loader.load_model`: a registered name,
``hf-hub:ORG/NAME``, a run directory), which checks the weights' sha256 against ``config.json``. The claims
come from ``config.json``'s ``cure_zoo.claims`` and the evaluation JSON it cites (``eval.json``, with the
per-image results); no prose is parsed. The evaluation engine re-runs the claimed attacks with the claimed
eps, seed and batch sizes on the claimed images (or the first N of them).

Decision rule, per accuracy metric (nat, pgd20, pgd100, cw20, aa, worst), with k of n images correct:

1. The claim must be self-consistent: ``accuracy == 100 * correct / n``, and, when ``eval.json`` is there,
   ``correct`` equals the number of correct images in its per-image record.
2. Same images as the claim: ``|k - claimed correct| <= b(n)`` images.
3. A subset of the claim's images (``--n-examples`` smaller than the claim's n):
   a. with the per-image record, ``|k - (claimed correct on these images)| <= b(n)``; and
   b. the claimed accuracy must lie inside the 99% Wilson interval of k/n, widened by ``b(n)/n`` on each
      side. The first N images in official order are treated as a random sample of the test split.

``b(n) = max(1, ceil(rate * n))`` is the allowance for documented nondeterminism: GPU kernels and CPU
instruction sets change floating-point results, which can flip images near a decision boundary (more often
after 20-100 gradient-sign steps), and AutoAttack draws its randomness per batch, so its batches (here:
chunks, see below) matter. Rates: nat 0.1%, PGD-20/100 and CW-inf 0.2%, AutoAttack and the worst case 0.5%.

Derived metrics (NRR, SUM) must be consistent with the claimed accuracies, and the claimed value must lie
between the metric evaluated at the lower and at the upper ends of the measured accuracies' allowed ranges
(both are increasing in each accuracy).

Resumable: images are evaluated in chunks (``chunk_size``, default 500, rounded to a multiple of the AutoAttack
batch size); each finished chunk's result is written atomically to a state folder keyed by weights, protocol
and images, with a sidecar recording its sha256 and that key (:func:`cure_zoo.io.record_checked`), and a re-run
of the same command skips finished chunks whose file is unchanged (a changed one is measured again). The
folder is removed after a complete run, so a later verify measures afresh. PGD/CW-inf starts are per image, so
chunking does not change them; AutoAttack sees the chunk as its image set, which is within its allowance.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CureZooError
from ..io import read_checked, record_checked, remove_checked, sha256_file, write_json_atomic
from ..models._hub import cache_dir, download_file, hub_config
from ..rundir import CONFIG_BLOCK, EVAL_FILE
from .claims import accuracy_claims, derived_claims, read_claims

Z_99 = 2.5758293035489004  # two-sided 99% normal quantile
ALLOWANCE_RATE = {"nat": 0.001, "pgd20": 0.002, "pgd100": 0.002, "cw20": 0.002, "aa": 0.005, "worst": 0.005}
DERIVED_INPUTS = {"nrr_cw": ("nat", "cw20"), "nrr_aa": ("nat", "aa"), "sum_aa": ("nat", "aa")}
DEFAULT_CHUNK = 500


def allowance(metric: str, n: int) -> int:
    """Images whose outcome may differ from the claim through documented nondeterminism (see module doc)."""
    base = metric.split("@")[0]
    return max(1, math.ceil(ALLOWANCE_RATE.get(base, 0.005) * n))


@dataclass
class Verdict:
    metric: str
    claimed: float  # percent, over the claim's images
    measured: float  # percent, over the images verified
    n: int  # images verified
    passed: bool
    rule: str  # which rule decided, in words
    detail: str = ""
    claimed_here: float | None = None  # the claim's own record restricted to the verified images
    allowed_images: int | None = None
    interval: list[float] | None = None  # subset rule: the accepted range for the claimed accuracy


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
# measuring, in resumable chunks


def _state_dir(root: Path | None, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return (Path(root) if root else cache_dir() / "verify") / digest


def measure(
    loaded: Any,
    images: Any,
    attacks: list[str],
    *,
    eps: float,
    seed: int,
    batch_size: int,
    aa_batch_size: int,
    device: str,
    chunk_size: int = DEFAULT_CHUNK,
    state_root: Path | None = None,
    allow_tf32: bool | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Any:
    """Evaluate ``images`` in chunks, reusing chunks a previous interrupted run finished; one merged result."""
    from ..evaluation import evaluate
    from ..evaluation.engine import resolve_device
    from ..evaluation.result import EvalResult, indices_to_ranges

    if "aa" in attacks:
        chunk_size = max(aa_batch_size, (chunk_size // aa_batch_size) * aa_batch_size)
    dev = resolve_device(device)
    key = {
        "weights": loaded.weights_sha256,
        "attacks": attacks,
        "eps": eps,
        "seed": seed,
        "batch_size": batch_size,
        "aa_batch_size": aa_batch_size,
        "device": dev.type,
        "dataset": images.dataset,
        "source": images.source,
        "indices": indices_to_ranges(images.indices.tolist()),
        "chunk_size": chunk_size,
        "allow_tf32": allow_tf32,
    }
    state = _state_dir(state_root, key)
    parts = []
    n = len(images)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        path = state / f"chunk_{start:07d}_{stop:07d}.json"
        made_from = json.dumps(dict(key, chunk=[start, stop]), sort_keys=True)  # weights, protocol, images
        if read_checked(path, made_from):
            try:
                parts.append(EvalResult.load(path))
                log(f"resuming: images {start}-{stop - 1} already measured ({path})")
                continue
            except (CureZooError, KeyError, ValueError):
                pass
        remove_checked(path)  # absent, changed since it was written, or for other inputs: measure again
        chunk = images.slice(start, stop)
        result = evaluate(
            loaded,
            chunk,
            attacks,
            batch_size=batch_size,
            aa_batch_size=aa_batch_size,
            device=dev,
            seed=seed,
            eps=eps,
            allow_tf32=allow_tf32,
            progress=progress,
        )
        if n > chunk_size:
            state.mkdir(parents=True, exist_ok=True)
            record_checked(result.save(path), made_from)
        parts.append(result)
    merged = EvalResult.concat(parts)
    shutil.rmtree(state, ignore_errors=True)  # complete: the next verify measures afresh
    return merged


# ---------------------------------------------------------------------------------------------------------
# the decision


def _widened_wilson(correct: int, n: int, slack: int) -> tuple[float, float]:
    from ..evaluation import wilson_interval

    lo, hi = wilson_interval(correct, n, z=Z_99)
    pad = 100.0 * slack / n
    return max(0.0, lo - pad), min(100.0, hi + pad)


def judge_accuracy(
    metric: str,
    claim: dict[str, Any],
    claim_mask: torch.Tensor | None,
    positions: list[int] | None,
    measured_mask: torch.Tensor,
    same_images: bool,
) -> Verdict:
    """Apply the decision rule (module doc) to one accuracy metric."""
    n = int(measured_mask.numel())
    k = int(measured_mask.sum())
    measured = 100.0 * k / n
    claimed = float(claim["accuracy"])
    b = allowance(metric, n)

    def verdict(passed: bool, rule: str, detail: str = "", **kw: Any) -> Verdict:
        return Verdict(metric, claimed, measured, n, passed, rule, detail, allowed_images=b, **kw)

    c_correct, c_n = int(claim["correct"]), int(claim["n"])
    if not (0 <= c_correct <= c_n) or abs(100.0 * c_correct / c_n - claimed) > 1e-6:
        return verdict(False, "claim consistency", f"claimed {claimed:.4f}% is not {c_correct}/{c_n}")
    if claim_mask is not None and int(claim_mask.sum()) != c_correct:
        return verdict(
            False,
            "claim consistency",
            f"claims {c_correct} correct but its per-image record has {int(claim_mask.sum())}",
        )
    if same_images:
        diff = k - c_correct
        flips = int((claim_mask != measured_mask).sum()) if claim_mask is not None else None
        detail = f"{k} vs {c_correct} correct" + (
            f"; {flips} images differ from the record" if flips is not None else ""
        )
        return verdict(abs(diff) <= b, f"same images: |difference| <= {b} image(s)", detail)
    lo, hi = _widened_wilson(k, n, b)
    in_interval = lo <= claimed <= hi
    if claim_mask is None:
        return verdict(
            in_interval,
            f"subset: claim inside 99% interval widened by {b} image(s)",
            f"claimed {claimed:.2f}% vs accepted [{lo:.2f}, {hi:.2f}]",
            interval=[lo, hi],
        )
    here = claim_mask[positions]
    expected = int(here.sum())
    per_image = abs(k - expected) <= b
    detail = (
        f"{k} vs {expected} correct on these images in the claim's record; claimed {claimed:.2f}% vs accepted "
        f"[{lo:.2f}, {hi:.2f}]"
    )
    return verdict(
        per_image and in_interval,
        f"subset: record within {b} image(s) and claim inside 99% interval",
        detail,
        claimed_here=100.0 * expected / n,
        interval=[lo, hi],
    )


def judge_derived(metric: str, claimed: float, claims_acc: dict[str, dict], verdicts: dict[str, Verdict]) -> Verdict:
    """A derived metric: consistent with the claimed accuracies, and inside the range its inputs allow."""
    from ..evaluation import nrr

    fn = (lambda a, b: a + b) if metric.startswith("sum") else nrr
    a, b = DERIVED_INPUTS[metric]
    recomputed = fn(claims_acc[a]["accuracy"], claims_acc[b]["accuracy"])
    va, vb = verdicts[a], verdicts[b]
    measured = fn(va.measured, vb.measured)
    base = Verdict(metric, claimed, measured, va.n, False, "", "")
    if abs(recomputed - claimed) > 1e-6:
        base.rule, base.detail = "claim consistency", f"{claimed:.4f} != {recomputed:.4f} from the claimed accuracies"
        return base

    def bounds(v: Verdict) -> tuple[float, float]:
        if v.interval is not None:
            return v.interval[0], v.interval[1]
        pad = 100.0 * (v.allowed_images or 0) / v.n
        return max(0.0, v.measured - pad), min(100.0, v.measured + pad)

    (la, ha), (lb, hb) = bounds(va), bounds(vb)
    lo, hi = fn(la, lb), fn(ha, hb)
    base.passed = lo - 1e-9 <= claimed <= hi + 1e-9
    base.rule = f"within the range allowed for {a} and {b}"
    base.detail = f"claimed {claimed:.2f} vs accepted [{lo:.2f}, {hi:.2f}]"
    base.interval = [lo, hi]
    return base


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
    """Re-measure ``spec``'s claims; see the module doc for the rule. Raises CureZooError for bad input."""
    from ..data.testsets import load_testset
    from ..evaluation.result import indices_to_ranges, ranges_to_indices
    from ..models.loader import load_model

    loaded = load_model(spec)
    source = claim_source(loaded)
    claims = source.claims
    protocol, cdata = claims["protocol"], claims["dataset"]
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
        f"{_ranges_text(cdata['indices'])}; eps {protocol['eps']:.6f}, seed {protocol['seed']})"
    )
    log(
        f"verifying on {len(mine)} images {_ranges_text(indices_to_ranges(mine))}: "
        f"{'the same images as the claim' if same else 'a subset of the claim images'}; attacks {', '.join(wanted)}"
    )
    result = measure(
        loaded,
        images,
        wanted,
        eps=float(protocol["eps"]),
        seed=int(protocol["seed"]),
        batch_size=bs,
        aa_batch_size=aa_bs,
        device=device,
        chunk_size=chunk_size,
        state_root=state_root,
        allow_tf32=allow_tf32,
        progress=progress,
        log=log,
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
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  ------")
    failed = [v.metric for v in report.verdicts if not v.passed]
    lines.append("")
    lines.append(
        f"all {len(report.verdicts)} claims hold" if not failed else f"NOT VERIFIED: {', '.join(failed)} do not hold"
    )
    return "\n".join(lines)


def write_report(report: VerifyReport, path: str | Path) -> Path:
    return write_json_atomic(path, report.to_json())
