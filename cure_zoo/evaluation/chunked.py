"""Chunked, resumable evaluation: :func:`evaluate_chunked` runs :func:`~cure_zoo.evaluation.evaluate` on
consecutive chunks of an image set and returns their merged result (:meth:`EvalResult.concat`).

Each finished chunk is written atomically to a state folder as its own ``cure_zoo.eval/1`` JSON, with a
sidecar recording its sha256 and what it was made from (:func:`cure_zoo.io.record_checked`: the weights, the
protocol, the dataset and the chunk's official image indices). A later call with the same inputs reuses a
chunk only if its file is unchanged and was made from the same inputs; anything else is measured again.

Chunking changes no PGD/CW-inf outcome (their random starts are drawn per image), but AutoAttack sees each
chunk as its image set, so with ``aa`` in the attacks the chunk size is rounded to a multiple of the
AutoAttack batch size. Used by ``cure-zoo verify`` (:mod:`cure_zoo.hub.verify`, a keyed folder removed after
a complete run) and by the CIFAR-10-5k campaign (one chunk per process, chunks kept).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import CureZooError
from ..io import read_checked, record_checked, remove_checked
from .engine import DEFAULT_BATCH_SIZE
from .result import EvalResult, indices_to_ranges

DEFAULT_CHUNK = 500
CHUNK_NAME = "chunk_{start:07d}_{stop:07d}.json"  # official index of the first image, and one past the last


def aligned_chunk_size(chunk_size: int, attacks: Sequence[str], aa_batch_size: int) -> int:
    """``chunk_size`` rounded down to a multiple of AutoAttack's batch size (at least one batch) when ``aa``
    runs, since AutoAttack draws its randomness per batch."""
    if "aa" in attacks:
        return max(aa_batch_size, (chunk_size // aa_batch_size) * aa_batch_size)
    return chunk_size


def evaluate_chunked(
    model: Any,
    images: Any,
    attacks: str | Sequence[str],
    *,
    state_dir: str | Path,
    keyed: bool = True,
    keep: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    chunk_name: str = CHUNK_NAME,
    eps: float | None = None,
    norm: str = "Linf",
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    aa_batch_size: int | None = None,
    device: str = "auto",
    allow_tf32: bool | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> EvalResult:
    """Evaluate ``images`` (an :class:`~cure_zoo.data.ImageSet`) in chunks of ``chunk_size``, reusing the
    intact chunks a previous interrupted call finished; one merged result (see the module doc).

    ``model``: a ``LoadedModel`` or a spec for :func:`~cure_zoo.models.loader.load_model` (loaded once).
    ``state_dir``: where chunks are kept; with ``keyed`` (the default) in a subfolder named by a digest of
    everything the evaluation depends on (weights, protocol, images, chunk size), so that other evaluations
    never meet these chunks. ``keep=False``: a chunk is written only when there is more than one, and the
    chunks (with ``keyed``, their subfolder) are removed once every chunk is measured, so the next call
    measures afresh; ``keep=True``: every chunk is written and kept. ``chunk_name``: the file name,
    formatted with ``start`` and ``stop``, the official index of the chunk's first image and one past its
    last. The other arguments are :func:`~cure_zoo.evaluation.evaluate`'s."""
    from ..distributed import resolve_device
    from ..models.loader import LoadedModel, load_model
    from . import evaluate  # looked up at call time (tests replace evaluate)
    from .protocol import parse_norm

    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    attacks = [a.strip() for a in attacks.split(",") if a.strip()] if isinstance(attacks, str) else list(attacks)
    aa_batch_size = aa_batch_size or batch_size
    chunk_size = aligned_chunk_size(chunk_size, attacks, aa_batch_size)
    norm = parse_norm(norm)
    dev = resolve_device(device)
    made_of = {
        "weights": loaded.weights_sha256,
        "attacks": attacks,
        "eps": eps,
        "seed": seed,
        "batch_size": batch_size,
        "aa_batch_size": aa_batch_size,
        "device": dev.type,
        "dataset": images.dataset,
        "source": images.source,
        "allow_tf32": allow_tf32,
    }
    if norm != "Linf":  # L-inf evaluations keep the keys (and chunk folders) they had before L2 existed
        made_of["norm"] = norm
    indices = images.indices.tolist()
    state = Path(state_dir)
    if keyed:
        key = dict(made_of, indices=indices_to_ranges(indices), chunk_size=chunk_size)
        state = state / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    parts, paths = [], []
    n = len(images)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        first, last = indices[start], indices[stop - 1]
        path = state / chunk_name.format(start=first, stop=last + 1)
        paths.append(path)
        made_from = json.dumps(dict(made_of, indices=indices_to_ranges(indices[start:stop])), sort_keys=True)
        if read_checked(path, made_from):
            try:
                parts.append(EvalResult.load(path))
                log(f"resuming: images {first}-{last} already measured ({path})")
                continue
            except (CureZooError, KeyError, ValueError):
                pass
        remove_checked(path)  # absent, changed since it was written, or for other inputs: measure again
        result = evaluate(
            loaded,
            images.slice(start, stop),
            attacks,
            batch_size=batch_size,
            aa_batch_size=aa_batch_size,
            device=dev,
            seed=seed,
            eps=eps,
            norm=norm,
            allow_tf32=allow_tf32,
            progress=progress,
        )
        if keep or n > chunk_size:
            state.mkdir(parents=True, exist_ok=True)
            record_checked(result.save(path), made_from)
        parts.append(result)
    merged = EvalResult.concat(parts)
    if not keep:  # complete: the next call measures afresh
        if keyed:
            shutil.rmtree(state, ignore_errors=True)
        else:  # the caller's folder: only what this call may have written
            for path in paths:
                remove_checked(path)
    return merged
