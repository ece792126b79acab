"""Representation similarity between the layers of two models: linear CKA (the paper's Sec. 3.2, Fig. 3 and
12, App. F.3).

Linear centred kernel alignment (Kornblith et al., 2019) of features ``X`` [n, p] and ``Y`` [n, q] is

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),   K = X X^T, L = Y Y^T,

with HSIC the (centred) Hilbert-Schmidt independence criterion. It lies in [0, 1] (both Gram matrices are
positive semi-definite, so their centred inner product is >= 0; the paper's App. F.3 says [-1, 1], which is
wrong for linear CKA), equals 1 for ``X`` against itself and is invariant to orthogonal transforms and
isotropic scaling of either feature space.

Holding every layer's features of 1,000+ images at once does not fit in memory, so :func:`cka_matrix` uses
the minibatch estimator of Nguyen et al. (2021): the unbiased HSIC estimator of Song et al. (2012) averaged
over minibatches, ``CKA = mean_i HSIC_1(K_i, L_i) / sqrt(mean_i HSIC_1(K_i, K_i) mean_i HSIC_1(L_i, L_i))``.
Only one minibatch's Gram matrices (b x b per layer) are held at a time. Being built from unbiased HSIC
terms, it converges to the population CKA as the number of images grows, whatever the batch size; averaging
the biased per-batch CKA would not (it is biased upwards at small batches). Estimation noise can put a
minibatch value slightly below 0 for nearly unrelated layers; it is reported as measured.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import CureZooError
from ..io import write_json_atomic
from ..rundir import CKA_SCHEMA

LOGITS = "logits"  # the name of the model's output in the layer lists
MIN_BATCH = 4  # the unbiased HSIC estimator divides by n (n - 3)


def gram(features: torch.Tensor) -> torch.Tensor:
    """The linear kernel ``X X^T`` (float64) of features ``[n, ...]`` flattened per sample."""
    x = features.flatten(1).to(torch.float64)
    return x @ x.T


def center_gram(k: torch.Tensor) -> torch.Tensor:
    """``H K H`` with ``H = I - 11^T / n``."""
    k = k - k.mean(0, keepdim=True)
    return k - k.mean(1, keepdim=True)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of features ``x`` [n, ...] and ``y`` [n, ...] on the same n samples, from all of them at
    once (Kornblith et al. 2019, the biased HSIC): ``<HKH, HLH>_F / (||HKH||_F ||HLH||_F)``."""
    if len(x) != len(y):
        raise ValueError(f"CKA needs features of the same samples, got {len(x)} and {len(y)} rows")
    k, l = center_gram(gram(x)), center_gram(gram(y))  # noqa: E741
    return float((k * l).sum() / (k.norm() * l.norm()))


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:  # noqa: E741
    """The unbiased HSIC estimator (Song et al. 2012) for Gram matrices ``k`` [A, n, n] and ``l`` [B, n, n]:
    the [A, B] matrix of ``HSIC_1(k[a], l[b])`` (float64). Needs n >= 4."""
    n = k.shape[-1]
    if n < MIN_BATCH:
        raise ValueError(f"the unbiased HSIC needs at least {MIN_BATCH} samples, got {n}")
    eye = torch.eye(n, dtype=torch.bool, device=k.device)
    k, l = k.masked_fill(eye, 0), l.masked_fill(eye, 0)  # noqa: E741
    trace = k.flatten(1) @ l.flatten(1).T  # tr(K L) = sum_ij K_ij L_ij (both symmetric)
    sums = k.sum((1, 2))[:, None] * l.sum((1, 2))[None, :]
    rows = k.sum(2) @ l.sum(2).T  # 1^T K L 1
    return (trace + sums / ((n - 1) * (n - 2)) - 2 * rows / (n - 2)) / (n * (n - 3))


class MinibatchCKA:
    """Accumulates the minibatch CKA estimator (Nguyen et al. 2021) between A layers and B layers."""

    def __init__(self) -> None:
        self.cross = self.self_a = self.self_b = None
        self.batches = 0
        self.samples = 0

    def update(self, grams_a: torch.Tensor, grams_b: torch.Tensor) -> None:
        """Add one minibatch: Gram matrices ``[A, b, b]`` and ``[B, b, b]`` of the same b samples."""
        cross = hsic_unbiased(grams_a, grams_b)
        self_a = torch.diagonal(hsic_unbiased(grams_a, grams_a))
        self_b = torch.diagonal(hsic_unbiased(grams_b, grams_b))
        if self.cross is None:
            self.cross, self.self_a, self.self_b = cross, self_a, self_b
        else:
            self.cross, self.self_a, self.self_b = self.cross + cross, self.self_a + self_a, self.self_b + self_b
        self.batches += 1
        self.samples += grams_a.shape[-1]

    def compute(self) -> torch.Tensor:
        """The [A, B] CKA matrix (float64)."""
        if self.cross is None:
            raise ValueError("no minibatch was added")
        denom = (self.self_a[:, None] * self.self_b[None, :]).clamp(min=0).sqrt()
        return self.cross / denom  # the 1/k of the means cancels


def default_layers(model: nn.Module) -> list[str]:
    """The layers CKA compares by default: the stem and every residual block (each stage of
    ``feature_info`` split into its blocks), then the logits. Falls back to the top-level children."""
    names = dict(model.named_modules())
    info = getattr(model, "feature_info", None)
    stages = [f["module"] for f in info] if isinstance(info, list) and info else [n for n, _ in model.named_children()]
    layers: list[str] = []
    for stage in stages:
        module = names.get(stage)
        if isinstance(module, nn.Sequential) and len(module) > 1:
            layers += [f"{stage}.{child}" for child, _ in module.named_children()]
        elif module is not None:
            layers.append(stage)
    return [*dict.fromkeys(layers), LOGITS]


def resolve_layers(model: nn.Module, layers: Sequence[str] | str | None) -> list[str]:
    """Check user-given layer names (or ``"default"``/None) against the model's modules."""
    if layers is None or layers == "default":
        return default_layers(model)
    if isinstance(layers, str):
        layers = [name.strip() for name in layers.split(",") if name.strip()]
    names = dict(model.named_modules())
    for name in layers:
        if name != LOGITS and (not name or name not in names):
            close = difflib.get_close_matches(name, list(names), n=3)
            hint = (
                f"; did you mean {', '.join(close)}?" if close else f"; the model has {', '.join(list(names)[1:6])}..."
            )
            raise CureZooError(f"the model has no layer {name!r}{hint} (use module names, or '{LOGITS}')")
    if not layers:
        raise CureZooError("no layers given; pass module names such as layer1.0,layer4.1,logits")
    return list(dict.fromkeys(layers))


@contextlib.contextmanager
def captured_grams(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks that store the Gram matrix of each named layer's output on every forward pass (the
    feature maps themselves are not kept, so a batch's memory is its b x b Gram per layer)."""
    grams: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = []

    def hook(name):
        def store(_module, _inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            grams[name] = gram(out.detach())

        return store

    for name in layers:
        if name != LOGITS:
            handles.append(modules[name].register_forward_hook(hook(name)))
    try:
        yield grams
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class CKAResult:
    """An [A, B] matrix of linear CKA between layers of model A (rows) and model B (columns)."""

    matrix: torch.Tensor
    layers_a: list[str]
    layers_b: list[str]
    models: dict[str, Any]
    images: dict[str, Any]
    estimator: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": CKA_SCHEMA,
            "models": self.models,
            "images": self.images,
            "estimator": self.estimator,
            "layers_a": self.layers_a,
            "layers_b": self.layers_b,
            "cka": [[round(float(v), 6) for v in row] for row in self.matrix],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CKAResult:
        """The result :meth:`to_json` wrote (e.g. a ``cka.json``, to draw it again)."""
        return cls(
            matrix=torch.tensor(obj["cka"], dtype=torch.float64).reshape(len(obj["layers_a"]), len(obj["layers_b"])),
            layers_a=list(obj["layers_a"]),
            layers_b=list(obj["layers_b"]),
            models=obj["models"],
            images=obj["images"],
            estimator=obj.get("estimator") or {},
        )

    def save(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_json())

    def plot(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """A heatmap (rows: A's layers bottom to top, columns: B's layers), values in [0, 1]."""
        from .figures import pyplot, save_png

        plt = pyplot()
        a, b = len(self.layers_a), len(self.layers_b)
        fig, ax = plt.subplots(figsize=(1.6 + 0.32 * b, 1.4 + 0.32 * a))
        im = ax.imshow(self.matrix.numpy(), origin="lower", cmap="magma", vmin=0, vmax=1)
        ax.set_xticks(range(b), self.layers_b, rotation=90, fontsize=6)
        ax.set_yticks(range(a), self.layers_a, fontsize=6)
        ax.set_xlabel(
            f"B: {self.models['b']['name']}"
            + (" (adversarial inputs)" if self.images.get("b_inputs") != "clean" else ""),
            fontsize=8,
        )
        ax.set_ylabel(f"A: {self.models['a']['name']}", fontsize=8)
        n = self.images["n_used"]
        ax.set_title(title or f"linear CKA, minibatch estimator, {n} {self.images['dataset']} images", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        return save_png(fig, path)


def _model_info(model: Any) -> tuple[nn.Module, dict[str, Any]]:
    from ..evaluation.engine import _describe_model

    return _describe_model(model)


def cka_matrix(
    model_a: Any,
    model_b: Any,
    images: Any,
    *,
    layers_a: Sequence[str] | str | None = None,
    layers_b: Sequence[str] | str | None = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    b_inputs: str = "clean",
    eps: float | str = 8 / 255,
    seed: int = 0,
) -> CKAResult:
    """Linear CKA between every layer of ``model_a`` and every layer of ``model_b`` on the same ``images``
    (an :class:`~cure_zoo.data.ImageSet`), with the minibatch estimator over batches of ``batch_size``.

    Models: an ``nn.Module``, a ``LoadedModel`` or a spec for ``load_model``; both run in eval mode.
    ``layers_*``: module names (``layer1.0``), ``"logits"`` for the output, or None for :func:`default_layers`.
    ``b_inputs="pgd20"`` feeds model B the PGD-20 adversarial images (at ``eps``, crafted against B) instead
    of the clean ones: the paper's Fig. 3 compares a model's representations of natural and adversarial data.
    A last batch of fewer than 4 images is left out (the unbiased HSIC needs 4); ``images.n_used`` says how
    many were used.
    """
    from ..distributed import resolve_device
    from ..evaluation.engine import adversarial_batch, attack_mode
    from ..evaluation.protocol import parse_attacks, parse_eps

    if batch_size < MIN_BATCH:
        raise CureZooError(
            f"the CKA batch size must be at least {MIN_BATCH} (the unbiased HSIC needs 4), got {batch_size}"
        )
    if b_inputs != "clean":
        specs = [s for s in parse_attacks(b_inputs, parse_eps(eps)) if s.kind == "pgd"]
        if len(specs) != 1:
            raise CureZooError(f"b_inputs must be 'clean' or one PGD attack (pgd20, pgd100, cw20), got {b_inputs!r}")
        attack = specs[0]
    if len(images) < MIN_BATCH:
        raise CureZooError(f"CKA needs at least {MIN_BATCH} images, got {len(images)}")
    net_a, info_a = _model_info(model_a)
    net_b, info_b = _model_info(model_b)
    names_a, names_b = resolve_layers(net_a, layers_a), resolve_layers(net_b, layers_b)
    dev = resolve_device(device)
    net_a.to(dev)
    net_b.to(dev)
    acc = MinibatchCKA()
    with contextlib.ExitStack() as stack:
        stack.enter_context(attack_mode(net_a))
        if net_b is not net_a:
            stack.enter_context(attack_mode(net_b))
        for start in range(0, len(images), batch_size):
            x = images.images[start : start + batch_size].to(dev)
            if len(x) < MIN_BATCH:
                break
            y = images.labels[start : start + batch_size].to(dev)
            x_b = x
            if b_inputs != "clean":
                x_b = adversarial_batch(net_b, attack, x, y, images.indices[start : start + batch_size], seed)
            with torch.no_grad():
                with captured_grams(net_a, names_a) as grams:
                    logits = net_a(x)
                grams_a = torch.stack([gram(logits) if n == LOGITS else grams[n] for n in names_a])
                with captured_grams(net_b, names_b) as grams:
                    logits = net_b(x_b)
                grams_b = torch.stack([gram(logits) if n == LOGITS else grams[n] for n in names_b])
            acc.update(grams_a, grams_b)
    matrix = acc.compute().cpu()
    return CKAResult(
        matrix=matrix,
        layers_a=names_a,
        layers_b=names_b,
        models={"a": info_a, "b": info_b},
        images={
            "dataset": images.dataset,
            "split": images.split,
            "source": images.source,
            "n_examples": len(images),
            "n_used": acc.samples,
            "b_inputs": b_inputs,
            **({"eps": parse_eps(eps), "seed": seed} if b_inputs != "clean" else {}),
        },
        estimator={
            "kind": "linear CKA, minibatch (Nguyen et al. 2021) with the unbiased HSIC (Song et al. 2012)",
            "batch_size": batch_size,
            "batches": acc.batches,
        },
    )
