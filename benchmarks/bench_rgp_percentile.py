"""The RGP masks' percentile: the selection ``rgp.percentile`` uses against the previous ``kthvalue`` one.

    python benchmarks/bench_rgp_percentile.py                         # ResNet-18's masked tensors, CPU
    python benchmarks/bench_rgp_percentile.py --device cuda --arch cifar_wrn34_10

For every masked tensor of the architecture (``masked_parameter_names(model, 'rgp')``) the RGP score of a
real step is made once: ``0.5 |dCE/dW| + 0.5 |dCE'/dW|`` of the freshly initialised model on 16 bundled
CIFAR-10 training images, clean and with an 8/255 sign perturbation. One "step" computes the percentile
(p = 30, the recipes' default) of every tensor, i.e. what ``apply_rgp_masks_`` selects. Variants, interleaved
round by round in one process (the order rotates each round), median over rounds, ratios against
``kthvalue`` taken within the same round:

* ``kthvalue``: an earlier implementation (``kthvalue`` for the lower order statistic, one comparison pass
  for the next value and the tie count), kept here as the baseline;
* ``sort``: ``percentile(selection='sort')``, one ``torch.sort`` per tensor on the device (the default
  off the CPU);
* ``partition``: ``percentile(selection='partition')``, ``np.partition`` of the whole tensor, the CPU's
  previous default (CPU only, since on an accelerator it would copy every score tensor to the host);
* ``bracket``: ``percentile(selection='bracket')``, the CPU's default: a sampled bracket, then
  ``np.partition`` of the entries inside it (CPU only).

Every variant's thresholds are also checked bit for bit against ``np.percentile``. Results go to
``benchmarks/results/rgp_percentile_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import functools
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F

import cure_zoo  # noqa: F401  (registers the architectures)
from cure_zoo.data import load_bundled
from cure_zoo.distributed import resolve_device
from cure_zoo.io import write_json_atomic, write_text_atomic
from cure_zoo.training.rgp import masked_parameter_names, percentile, rgp_score_

RESULTS = Path(__file__).parent / "results"
P = 30.0


def percentile_kthvalue(values: torch.Tensor, q: float) -> torch.Tensor:
    """The previous ``rgp.percentile`` (kthvalue + one comparison pass), the baseline."""
    flat = values.reshape(-1)
    n = flat.numel()
    h = (n - 1) * q / 100.0
    lo = min(int(math.floor(h)), n - 1)
    frac = h - lo
    v_lo = flat.kthvalue(lo + 1).values
    if frac == 0.0 or lo + 1 >= n:
        return v_lo
    greater = flat > v_lo
    above = torch.where(greater, flat, float("inf")).amin()
    v_hi = torch.where(n - greater.sum() > lo + 1, v_lo, above)
    return v_lo + frac * (v_hi - v_lo)


def real_scores(model: torch.nn.Module, names: set[str], device: torch.device) -> list[torch.Tensor]:
    """The RGP score (alpha 0.5) of every masked tensor from one clean and one perturbed batch of real images."""
    data = load_bundled("cifar10", "train", n=16)
    x, y = data.images.to(device), data.labels.to(device)
    g = torch.Generator().manual_seed(0)
    x_other = (x + (8 / 255) * torch.sign(torch.randn(x.shape, generator=g)).to(device)).clamp(0, 1)
    model = model.to(device).train()
    masked = [p for n, p in model.named_parameters() if n in names]
    g_nat = torch.autograd.grad(F.cross_entropy(model(x), y), masked)
    g_other = torch.autograd.grad(F.cross_entropy(model(x_other), y), masked)
    return [rgp_score_(a.detach().clone(), b.detach().clone(), 0.5) for a, b in zip(g_nat, g_other, strict=True)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(arch: str, device: torch.device, rounds: int, model_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time the variants on ``arch``'s masked tensors; returns the report (also used by gpu_check.py)."""
    model = timm.create_model(arch, **(model_args or {}))
    names = set(masked_parameter_names(model, "rgp"))
    shapes = [p.shape for n, p in model.named_parameters() if n in names]
    scores = real_scores(model, names, device)
    zero_share = sum(int((s == 0).sum()) for s in scores) / sum(s.numel() for s in scores)
    # host selections only on the CPU: on an accelerator they would copy every score tensor to the host
    selections = ("sort", "partition", "bracket") if device.type == "cpu" else ("sort",)
    variants = {"kthvalue": lambda s: percentile_kthvalue(s, P)}
    variants |= {sel: functools.partial(percentile, q=P, selection=sel) for sel in selections}
    bit_equal = {}
    for name, fn in variants.items():  # also the warm-up
        ours = torch.stack([fn(s) for s in scores]).cpu().numpy()
        ref = np.array([np.percentile(s.cpu().numpy(), P) for s in scores], dtype=np.float32)
        bit_equal[name] = bool(np.array_equal(ours.view(np.int32), ref.view(np.int32)))
    names_ = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names_}
    for r in range(rounds):
        for n in names_[r % len(names_) :] + names_[: r % len(names_)]:
            _sync(device)
            t0 = time.perf_counter()
            for s in scores:
                variants[n](s)
            _sync(device)
            times[n].append(time.perf_counter() - t0)
    ratio = {n: [k / t for k, t in zip(times["kthvalue"], times[n], strict=True)] for n in names_}
    return {
        "benchmark": "RGP percentile of every masked tensor (one training step's masks)",
        "arch": arch,
        "model_args": model_args or {},
        "masked_tensors": len(shapes),
        "masked_entries": sum(math.prod(s) for s in shapes),
        "largest_tensor": max(math.prod(s) for s in shapes),
        "p": P,
        "zero_scores_share": round(zero_share, 4),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "median_ms_per_step": {n: round(1e3 * statistics.median(t), 3) for n, t in times.items()},
        "speedup_vs_kthvalue": {n: round(statistics.median(r), 3) for n, r in ratio.items()},
        "bit_equal_to_numpy": bit_equal,
        "torch": torch.__version__,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# RGP percentile: {report['arch']} ({report['masked_tensors']} masked tensors, "
        f"{report['masked_entries'] / 1e6:.1f} M entries), {report['device']} ({report['device_name']}, "
        f"{report['threads']} threads), {report['rounds']} interleaved rounds",
        "",
        f"Scores of a real step (p = {report['p']:g}); {100 * report['zero_scores_share']:.1f}% of them are zero.",
        "",
        "| variant | ms per step (median) | speed vs kthvalue (median of round ratios) | bit-equal to np.percentile |",
        "|---|---|---|---|",
    ]
    for n, ms in report["median_ms_per_step"].items():
        lines.append(f"| {n} | {ms:.1f} | {report['speedup_vs_kthvalue'][n]:.2f} | {report['bit_equal_to_numpy'][n]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="cifar_resnet18")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", default=None, help="JSON path (default results/rgp_percentile_<device>.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    report = run(args.arch, device, args.rounds)
    out = Path(args.out) if args.out else RESULTS / f"rgp_percentile_{device.type}.json"
    write_json_atomic(out, report)
    write_text_atomic(out.with_suffix(".md"), markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
