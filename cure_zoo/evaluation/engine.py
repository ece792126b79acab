"""``evaluate()``: run the protocol's attacks on a model over a test set and return an :class:`EvalResult`.

Batched throughout. PGD/CW-inf random starts are drawn per image from ``(seed, official image index)``, so
their per-sample outcomes do not depend on the batch size or on sharding. Under ``torchrun`` (an initialised
default process group) each rank evaluates a contiguous slice and the masks are gathered, so every rank
returns the same full result.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from functools import partial
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..attacks import (
    ce_loss,
    classify,
    cw_margin_loss,
    frozen_parameters,
    indexed_l2_start,
    indexed_uniform_start,
    nonfinite_flag,
    pgd,
)
from ..data import ImageSet, get_dataset_info
from ..distributed import all_gather_object, resolve_device, world
from ..errors import CureZooError
from ..version import library_versions
from .autoattack import STANDARD_ATTACKS, run_autoattack
from .metrics import stage_summary, sum_counts, summarise
from .protocol import AttackSpec, default_eps, parse_attacks, parse_eps, parse_norm
from .result import EvalResult
from .sharding import gather_masks, shard_bounds

DEFAULT_ATTACKS = ("nat", "pgd20", "cw20", "aa")
DEFAULT_BATCH_SIZE = 128
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def numerics_settings() -> dict[str, Any]:
    """The process's float32 numerics that change a GPU result's bits: cuDNN autotuning and determinism,
    TF32 in cuDNN convolutions (on by default in torch) and in matmuls, and ``float32_matmul_precision``."""
    return {
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


@contextlib.contextmanager
def tf32_allowed(allow: bool | None) -> Iterator[None]:
    """``allow``: switch TF32 on (True) or off (False) in cuDNN convolutions and matmuls for the block, then
    restore the previous settings; None leaves them as the process has them. TF32 rounds convolution inputs
    to 10 mantissa bits, so per-image outcomes near a decision boundary differ from full float32."""
    if allow is None:
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    precision = torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allow
    torch.set_float32_matmul_precision("high" if allow else "highest")
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
        torch.set_float32_matmul_precision(precision)


def _describe_model(model: Any) -> tuple[nn.Module, dict[str, Any]]:
    from ..models.loader import LoadedModel, load_model

    if isinstance(model, str):
        model = load_model(model)
    if isinstance(model, LoadedModel):
        return model.model, {"spec": model.spec, "name": model.name, "weights_sha256": model.weights_sha256}
    if isinstance(model, nn.Module):
        cfg = getattr(model, "pretrained_cfg", None) or {}
        name = cfg.get("architecture", type(model).__name__)
        if cfg.get("tag"):
            name = f"{name}.{cfg['tag']}"
        return model, {"spec": None, "name": name, "weights_sha256": None}
    raise TypeError(f"model must be an nn.Module, a LoadedModel or a model spec string, not {type(model).__name__}")


def _resolve_images(dataset: str | ImageSet, n_examples: int | None, data_dir, download, notify) -> ImageSet:
    from ..data.testsets import _print_notice, load_testset

    if isinstance(dataset, ImageSet):
        if n_examples is not None and n_examples <= 0:
            raise CureZooError(f"n_examples must be positive, got {n_examples}")
        return dataset if n_examples is None else dataset.take(n_examples)
    return load_testset(
        str(dataset),
        data_dir=data_dir,
        n=n_examples,
        download=download,
        notify=_print_notice if notify is None else notify,
    )


@torch.no_grad()
def check_logits(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    """Refuse outputs the attacks cannot use: wrong width, non-finite values, or probabilities."""
    out = model(x)
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise CureZooError(
            f"the model outputs shape {tuple(out.shape)} but the dataset has {num_classes} classes; "
            f"evaluate a {num_classes}-class model (num_classes={num_classes})"
        )
    if not torch.isfinite(out).all():
        raise CureZooError("the model outputs NaN or infinite values on clean test images; check its weights")
    if out.min() >= 0 and out.max() <= 1 and torch.allclose(out.sum(1), torch.ones(len(out), device=out.device)):
        raise CureZooError(
            "the model outputs probabilities (rows in [0, 1] summing to 1), not logits; the attacks need "
            "logits (remove the final softmax)"
        )


def resolve_memory_format(memory_format: str, device: torch.device) -> torch.memory_format:
    """``auto`` -> channels_last on the CPU, where oneDNN's convolutions run PGD about 1.1x faster in it
    (``benchmarks/bench_attacks.py``), and contiguous (NCHW) on CUDA, where it has not been measured."""
    if memory_format not in MEMORY_FORMATS:
        raise CureZooError(f"unknown memory format {memory_format!r}; use one of {', '.join(MEMORY_FORMATS)}")
    if memory_format == "auto":
        memory_format = "channels_last" if device.type == "cpu" else "contiguous"
    return torch.channels_last if memory_format == "channels_last" else torch.contiguous_format


@contextlib.contextmanager
def in_memory_format(model: nn.Module, memory_format: torch.memory_format) -> Iterator[None]:
    """Lay the model's 4-d parameters and buffers out in ``memory_format`` for the duration (the same values,
    another stride order); the original tensors are put back after."""
    saved = [(t, t.data) for t in (*model.parameters(), *model.buffers()) if t.ndim == 4]
    for t, data in saved:
        t.data = data.contiguous(memory_format=memory_format)
    try:
        yield
    finally:
        for t, data in saved:
            t.data = data


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the duration; the model's own state is restored after."""
    was_training = model.training
    model.eval()
    try:
        with frozen_parameters(model):
            yield
    finally:
        model.train(was_training)


def adversarial_batch(
    model: nn.Module, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor, seed: int
) -> torch.Tensor:
    """The images ``model`` is classified on under ``nat`` (``x`` itself) or a PGD-family attack."""
    if spec.kind == "pgd":
        loss = ce_loss if spec.loss == "ce" else partial(cw_margin_loss, confidence=spec.confidence)
        start = indexed_uniform_start if spec.norm == "Linf" else indexed_l2_start
        delta = start(x, spec.eps, seed, indices)
        return pgd(model, x, lambda logits: loss(logits, y), eps=spec.eps, step_size=spec.step_size,
                   steps=spec.steps, delta=delta, norm=spec.norm)  # fmt: skip
    if spec.kind != "nat":
        raise ValueError(f"attack_batch runs nat and PGD attacks, not {spec.kind}")
    return x


def attack_batch(
    model: nn.Module, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor, seed: int
) -> torch.Tensor:
    """Per-sample correctness (bool [B]) of ``model`` on one batch under ``nat`` or a PGD-family attack."""
    x = adversarial_batch(model, spec, x, y, indices, seed)
    with torch.no_grad():
        return classify(model(x), y).correct


def _run_batched(
    model, spec, images: ImageSet, *, batch_size, device, memory_format, seed, bar
) -> tuple[torch.Tensor, int]:
    """Per-image correctness under ``spec`` and how many images had non-finite logits (counted as wrong)."""
    out, nonfinite = [], 0
    for start in range(0, len(images), batch_size):
        sl = slice(start, start + batch_size)
        x = images.images[sl].to(device).contiguous(memory_format=memory_format)
        y = images.labels[sl].to(device)
        x = adversarial_batch(model, spec, x, y, images.indices[sl], seed)
        with torch.no_grad():
            classified = classify(model(x), y)
        out.append(classified.correct.cpu())
        nonfinite += int(classified.nonfinite.sum())
        bar.update(1)
        bar.set_postfix_str(f"acc {100 * torch.cat(out).float().mean():.1f}%")
    return (torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)), nonfinite


class _AutoAttackBar:
    """Progress of AutoAttack's sub-attacks on a bar with one step per sub-attack."""

    def __init__(self, bar):
        self.bar, self.done = bar, 0

    def __call__(self, sub: str, batch: int, n_batches: int) -> None:
        pos = STANDARD_ATTACKS.index(sub) if sub in STANDARD_ATTACKS else self.done
        self.bar.set_postfix_str(f"{sub} batch {batch}/{n_batches}")
        if batch == n_batches and pos + 1 > self.done:
            self.bar.update(pos + 1 - self.done)
            self.done = pos + 1


def evaluate(
    model: nn.Module | Any,
    dataset: str | ImageSet,
    attacks: str | Sequence[str] = DEFAULT_ATTACKS,
    *,
    n_examples: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    aa_batch_size: int | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    eps: float | str | None = None,
    norm: str = "Linf",
    data_dir: str | os.PathLike | None = None,
    download: bool | str = "auto",
    memory_format: str = "auto",
    allow_tf32: bool | None = None,
    progress: bool = True,
    notify: Callable[[str], None] | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``dataset`` under ``attacks`` (``"nat,pgd20,cw20,aa"`` or a list).

    ``model``: an ``nn.Module`` returning logits for [0, 1] NCHW inputs, a ``LoadedModel``, or a spec for
    ``load_model`` (registered name, ``hf-hub:...``, run directory, ``.safetensors``); it is moved to
    ``device`` and evaluated in eval mode (its training flag and ``requires_grad`` are restored after).
    ``dataset``: a name (``cifar10``, ``cifar100``, ``svhn``; see :func:`cure_zoo.data.load_testset` for
    ``data_dir``, ``download`` and the bundled fallback, announced through ``notify``, default: stderr) or an
    ``ImageSet``.
    ``n_examples``: the first N images in official order. ``eps`` (float or ``"8/255"``) applies to every
    attack without its own ``@eps``; None: the norm's default (8/255 under ``norm="Linf"``, 0.5 under
    ``"L2"``). ``aa_batch_size`` defaults to ``batch_size``.
    ``memory_format``: ``auto`` (channels_last on the CPU, NCHW on CUDA), ``channels_last`` or ``contiguous``;
    the attacks run with the model's weights and the images in it (a speed choice, recorded in the protocol).
    ``allow_tf32``: TF32 on or off for the evaluation (:func:`tf32_allowed`; ``cure-zoo eval``/``verify``
    pass False unless ``--allow-tf32``); None keeps the process's settings. The settings in effect are
    recorded in the protocol (``numerics``).
    """
    start_time = time.perf_counter()
    norm = parse_norm(norm)
    eps = default_eps(norm) if eps is None else parse_eps(eps, norm)
    specs = parse_attacks(attacks, eps, norm)
    if batch_size <= 0 or (aa_batch_size is not None and aa_batch_size <= 0):
        raise CureZooError(f"batch size must be positive, got {batch_size if batch_size <= 0 else aa_batch_size}")
    aa_batch_size = aa_batch_size or batch_size
    images = _resolve_images(dataset, n_examples, data_dir, download, notify)  # before the model: fail fast on bad data
    net, model_info = _describe_model(model)
    num_classes = get_dataset_info(images.dataset).num_classes
    dev = resolve_device(device)
    layout = resolve_memory_format(memory_format, dev)
    rank, world_size = world()
    start, stop = shard_bounds(len(images), rank, world_size)
    shard = images.slice(start, stop)
    net.to(dev)
    show = progress and rank == 0
    masks: dict[str, torch.Tensor] = {}
    times: dict[str, float] = {}
    stages: dict[str, dict[str, int]] = {}  # AutoAttack attack -> robust count after each sub-attack
    stage_seconds: dict[str, dict[str, float]] = {}  # AutoAttack attack -> wall time of each sub-attack
    flags: list[str] = []
    nonfinite_counts: dict[str, int] = {}  # attack -> images with NaN/inf logits (counted as not robust)
    with attack_mode(net), in_memory_format(net, layout), tf32_allowed(allow_tf32):
        numerics = numerics_settings()
        check_logits(net, images.images[:batch_size].to(dev), num_classes)  # same images on every rank
        for spec in specs:
            t0 = time.perf_counter()
            if spec.kind == "autoattack":
                with tqdm(total=len(STANDARD_ATTACKS), desc=spec.name, unit="attack", disable=not show) as bar:
                    outcome = run_autoattack(
                        net, shard.images, shard.labels, eps=spec.eps, norm=norm, seed=seed, batch_size=aa_batch_size,
                        device=dev, on_progress=_AutoAttackBar(bar),
                    )  # fmt: skip
                    bar.update(bar.total - bar.n)
                masks[spec.name] = outcome.robust
                stages[spec.name] = outcome.robust_after()
                stage_seconds[spec.name] = outcome.seconds
                flags += outcome.flags
            else:
                n_batches = -(-len(shard) // batch_size)
                with tqdm(total=n_batches, desc=spec.name, unit="batch", disable=not show) as bar:
                    masks[spec.name], nonfinite = _run_batched(
                        net, spec, shard, batch_size=batch_size, device=dev, memory_format=layout, seed=seed, bar=bar
                    )
                nonfinite_counts[spec.name] = nonfinite
            times[spec.name] = time.perf_counter() - t0

    masks = gather_masks(masks)
    per_rank = all_gather_object(
        {
            "flags": flags,
            "times": times,
            "stages": stages,
            "stage_seconds": stage_seconds,
            "nonfinite": nonfinite_counts,
        }
    )
    flags = list(dict.fromkeys(f for part in per_rank for f in part["flags"]))
    for name in nonfinite_counts:  # summed over the ranks: one flag per attack
        count = sum(part["nonfinite"][name] for part in per_rank)
        if count:
            flags.append(nonfinite_flag(name, count, len(images)))
    times = {k: max(part["times"][k] for part in per_rank) for k in times}  # wall time = slowest rank

    main = [s.name for s in specs if s.kind == "nat" or s.eps == eps]
    has_attack = any(s.kind != "nat" for s in specs)
    results, worst = summarise(masks, times, worst_over=main if has_attack else ())
    for name in stages:  # AutoAttack: robust accuracy after each sub-attack, summed over the ranks
        counts = sum_counts(part["stages"][name] for part in per_rank)
        results[name]["stages"] = stage_summary(counts, len(images), STANDARD_ATTACKS)
        seconds = [part["stage_seconds"][name] for part in per_rank]  # wall time = slowest rank
        for stage in results[name]["stages"]:
            results[name]["stages"][stage]["time_s"] = max(part.get(stage, 0.0) for part in seconds)
    if worst is not None:
        masks["worst"] = worst

    param = next(net.parameters(), None)
    protocol = {
        "eps": eps,
        "norm": norm,
        "input_range": [0.0, 1.0],
        "model_mode": "eval",
        "attacks": {s.name: s.describe(seed) for s in specs},
        "seed": seed,
        "batch_size": batch_size,
        "aa_batch_size": aa_batch_size if any(s.kind == "autoattack" for s in specs) else None,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "world_size": world_size,
        "shards": "contiguous slices, one per rank" if world_size > 1 else None,
        "dtype": str(param.dtype).replace("torch.", "") if param is not None else "float32",
        "memory_format": str(layout).replace("torch.", ""),
        "numerics": numerics,
        "versions": library_versions(),
    }
    dataset_info = {
        "name": images.dataset,
        "split": images.split,
        "source": images.source,
        "n_examples": len(images),
        "indices": images.indices.tolist(),
    }
    return EvalResult(
        model=model_info,
        dataset=dataset_info,
        protocol=protocol,
        results=results,
        masks=masks,
        time_s=round(time.perf_counter() - start_time, 3),
        flags=flags,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
