"""The result of an evaluation and its JSON form (schema ``cure_zoo.eval/1``).

The JSON, written atomically by :meth:`EvalResult.save`, is what model cards quote and ``cure-zoo verify``
compares against. Its fields, precisely:

- ``dataset.indices`` is a list of half-open ``[start, stop)`` ranges of official test-split indices
  (``[[0, 1000]]`` for the first 1,000 images), so 10,000 indices stay one line; :attr:`EvalResult.indices`
  expands it.
- ``masks[name]`` is the per-sample correctness (True = classified correctly under that attack), in the order
  of ``indices``, as ``np.packbits(mask, bitorder="big").tobytes().hex()``; ``masks_encoding`` names that.
  :meth:`EvalResult.mask` decodes it to a bool tensor.
- ``results[name]`` for each attack (and ``worst``) is ``{"accuracy" (percent), "correct", "n", "ci95"
  ([lo, hi] percent, Wilson), "time_s"}``; ``nrr_cw``, ``nrr_aa`` and ``sum_aa`` are plain percentages and
  appear only when their inputs were run. ``worst`` (the per-sample worst case over ``nat`` and every attack
  at the main eps) appears when at least one attack ran.
- ``flags`` lists warnings raised during the run (AutoAttack's own checks, budget or consistency problems);
  an empty list means none. ``time_s`` is the wall time of the whole evaluation.
- :meth:`EvalResult.concat` combines results on consecutive chunks (resumable runs); the combined
  ``protocol`` gains ``chunks`` (the chunk sizes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CureZooError
from ..io import write_json_atomic
from ..tables import text_table
from .autoattack import STANDARD_ATTACKS
from .metrics import stage_summary, sum_counts, summarise

SCHEMA = "cure_zoo.eval/1"
MASKS_ENCODING = "packbits-big-hex"
# Result keys that are attacks' accuracies (everything else in "results" is a derived number).
DERIVED_KEYS = ("nrr_cw", "nrr_aa", "sum_aa")
# The numbers a model card / published.json quotes, by key.
CLAIM_KEYS = ("nat", "pgd20", "pgd100", "cw20", "aa", "worst", "nrr_cw", "nrr_aa", "sum_aa")


def encode_mask(mask: torch.Tensor) -> str:
    return np.packbits(mask.detach().cpu().numpy().astype(bool), bitorder="big").tobytes().hex()


def decode_mask(text: str, n: int) -> torch.Tensor:
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8), bitorder="big")
    if len(bits) < n:
        raise CureZooError(f"a mask in the evaluation JSON holds {len(bits)} samples, expected {n}")
    return torch.from_numpy(bits[:n].astype(bool))


def indices_to_ranges(indices: list[int]) -> list[list[int]]:
    ranges: list[list[int]] = []
    for i in indices:
        if ranges and ranges[-1][1] == i:
            ranges[-1][1] = i + 1
        else:
            ranges.append([i, i + 1])
    return ranges


def ranges_to_indices(ranges: list[list[int]]) -> list[int]:
    return [i for start, stop in ranges for i in range(start, stop)]


@dataclass
class EvalResult:
    """What :func:`cure_zoo.evaluation.evaluate` returns. ``masks`` are bool tensors over ``indices``."""

    model: dict[str, Any]
    dataset: dict[str, Any]
    protocol: dict[str, Any]
    results: dict[str, Any]
    masks: dict[str, torch.Tensor]
    time_s: float
    flags: list[str] = field(default_factory=list)
    created: str = ""

    @property
    def indices(self) -> list[int]:
        return list(self.dataset["indices"])

    @property
    def n_examples(self) -> int:
        return int(self.dataset["n_examples"])

    def accuracy(self, name: str) -> float:
        """Accuracy (percent) under attack ``name`` (``nat``, ``pgd20``, ``worst``...) or a derived number."""
        if name not in self.results:
            raise KeyError(f"no result {name!r}; this evaluation has {', '.join(self.results)}")
        value = self.results[name]
        return float(value["accuracy"] if isinstance(value, dict) else value)

    def mask(self, name: str) -> torch.Tensor:
        return self.masks[name]

    def claims(self) -> dict[str, float]:
        """The headline numbers, rounded to 2 decimals, for cards and ``published.json``."""
        return {k: round(self.accuracy(k), 2) for k in CLAIM_KEYS if k in self.results}

    def differing_samples(self, other: EvalResult) -> dict[str, int]:
        """For every attack both results have, how many samples are classified differently (same images
        required)."""
        if self.indices != other.indices or self.dataset["name"] != other.dataset["name"]:
            raise CureZooError("the two evaluations are on different images; compare runs on the same indices")
        return {k: int((self.masks[k] != other.masks[k]).sum()) for k in self.masks if k in other.masks}

    @classmethod
    def concat(cls, parts: Sequence[EvalResult]) -> EvalResult:
        """One result from results on consecutive chunks of images (same model, dataset and protocol): masks
        concatenated, every number recomputed from them, times and flags combined. For resumable runs."""
        if not parts:
            raise ValueError("concat needs at least one result")
        first = parts[0]
        for p in parts[1:]:
            if p.model.get("weights_sha256") != first.model.get("weights_sha256"):
                raise CureZooError("cannot combine evaluations of different weights")
            if p.dataset["name"] != first.dataset["name"] or p.protocol.get("attacks") != first.protocol.get("attacks"):
                raise CureZooError("cannot combine evaluations of different datasets or protocols")
            if set(p.masks) != set(first.masks):
                raise CureZooError("cannot combine evaluations that ran different attacks")
        if len(parts) == 1:
            return first
        names = [k for k in first.masks if k != "worst"]
        masks = {k: torch.cat([p.masks[k] for p in parts]) for k in names}
        times = {k: sum(p.results[k].get("time_s", 0.0) for p in parts) for k in names}
        worst_over = first.results.get("worst", {}).get("over", ())
        results, worst = summarise(masks, times, worst_over=worst_over)
        if worst is not None:
            masks["worst"] = worst
        for name in names:  # AutoAttack's per-sub-attack counts add up over chunks
            if all("stages" in p.results.get(name, {}) for p in parts):
                counts = sum_counts({s: v["correct"] for s, v in p.results[name]["stages"].items()} for p in parts)
                results[name]["stages"] = stage_summary(counts, len(masks[name]), STANDARD_ATTACKS)
                for stage, row in results[name]["stages"].items():  # chunks run one after another
                    row["time_s"] = round(
                        sum(p.results[name]["stages"].get(stage, {}).get("time_s", 0.0) for p in parts), 1
                    )
        indices = [i for p in parts for i in p.indices]
        return cls(
            model=first.model,
            dataset=dict(first.dataset, n_examples=len(indices), indices=indices),
            protocol=dict(first.protocol, chunks=[p.n_examples for p in parts]),
            results=results,
            masks=masks,
            time_s=round(sum(p.time_s for p in parts), 3),
            flags=list(dict.fromkeys(f for p in parts for f in p.flags)),
            created=first.created,
        )

    # ---- JSON ------------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        dataset = dict(self.dataset, indices=indices_to_ranges(self.indices))
        return {
            "schema": SCHEMA,
            "created": self.created,
            "model": self.model,
            "dataset": dataset,
            "protocol": self.protocol,
            "results": self.results,
            "masks_encoding": MASKS_ENCODING,
            "masks": {k: encode_mask(v) for k, v in self.masks.items()},
            "flags": list(self.flags),
            "time_s": self.time_s,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> EvalResult:
        """An ``EvalResult`` from its JSON object; anything malformed is one :class:`CureZooError`."""
        if not isinstance(obj, dict):
            raise CureZooError(f"not a cure-zoo evaluation result (a JSON {type(obj).__name__}, not an object)")
        try:
            return cls._from_json(obj)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            reason = f"missing {err}" if isinstance(err, KeyError) else " ".join(str(err).split())[:160]
            raise CureZooError(
                f"a malformed cure-zoo evaluation result ({reason}); write it again with cure-zoo eval"
            ) from None

    @classmethod
    def _from_json(cls, obj: dict[str, Any]) -> EvalResult:
        if obj.get("schema") != SCHEMA:
            raise CureZooError(f"not a cure-zoo evaluation result (schema {obj.get('schema')!r}, expected {SCHEMA})")
        if obj.get("masks_encoding", MASKS_ENCODING) != MASKS_ENCODING:
            raise CureZooError(f"unknown masks_encoding {obj['masks_encoding']!r}")
        dataset = dict(obj["dataset"], indices=ranges_to_indices(obj["dataset"]["indices"]))
        n = int(dataset["n_examples"])
        if len(dataset["indices"]) != n:
            raise CureZooError(f"the evaluation JSON lists {len(dataset['indices'])} indices for n_examples={n}")
        return cls(
            model=obj["model"],
            dataset=dataset,
            protocol=obj["protocol"],
            results=obj["results"],
            masks={k: decode_mask(v, n) for k, v in obj["masks"].items()},
            time_s=float(obj["time_s"]),
            flags=list(obj.get("flags", [])),
            created=obj.get("created", ""),
        )._checked()

    def _checked(self) -> EvalResult:
        """The field types the card, verify and the table rely on."""
        for name, part in (("model", self.model), ("protocol", self.protocol), ("results", self.results)):
            if not isinstance(part, dict):
                raise TypeError(f"{name!r} is a {type(part).__name__}, not an object")
        for name, r in self.results.items():
            if isinstance(r, dict) and not isinstance(r.get("accuracy", 0.0), int | float):
                raise TypeError(f"results[{name!r}].accuracy is not a number")
        return self

    def save(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> EvalResult:
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CureZooError(f"{path} does not exist") from None
        except json.JSONDecodeError as err:
            raise CureZooError(f"{path} is not valid JSON ({err.msg} at line {err.lineno})") from None
        except UnicodeDecodeError:
            raise CureZooError(f"{path} is not JSON text (not UTF-8)") from None
        try:
            return cls.from_json(obj)
        except CureZooError as err:
            raise CureZooError(f"{path}: {err}") from None

    # ---- display ---------------------------------------------------------------------------------------
    def format_table(self) -> str:
        """A plain-text table: one row per attack (accuracy, 95% interval, time), then NRR/SUM."""
        rows = [("attack", "eps", "accuracy %", "95% CI", "correct/n", "time s")]
        attacks = self.protocol.get("attacks", {})
        for name, r in self.results.items():
            if not isinstance(r, dict):
                continue
            eps = attacks.get(name, {}).get("eps")
            rows.append(
                (
                    name,
                    "-" if eps is None else _eps_text(eps, attacks[name].get("norm", "Linf")),
                    f"{r['accuracy']:.2f}",
                    f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]",
                    f"{r['correct']}/{r['n']}",
                    f"{r['time_s']:.1f}" if "time_s" in r else "-",
                )
            )
        lines = [text_table(rows)]
        for name, r in self.results.items():
            if isinstance(r, dict) and r.get("stages"):
                steps = ", ".join(f"{s.upper()} {v['accuracy']:.2f}" for s, v in r["stages"].items())
                lines.append(f"{name}: robust accuracy % after {steps}")
        derived = [f"{k.upper().replace('_', '-')} {self.results[k]:.2f}" for k in DERIVED_KEYS if k in self.results]
        if derived:
            lines.append("")
            lines.append("   ".join(derived))
        return "\n".join(lines)


def _eps_text(eps: float, norm: str = "Linf") -> str:
    from .protocol import eps_label

    return eps_label(eps, norm)
