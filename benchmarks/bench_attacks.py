"""PGD-20 throughput of cure_zoo's attack against torchattacks' PGD, and AutoAttack's time per 100 images.

    python benchmarks/bench_attacks.py                       # real AutoAttack ResNet-18, batch 32, CPU
    python benchmarks/bench_attacks.py --device cuda --batch 256 --aa-images 500

What is measured:

* PGD-20 (eps 8/255, step 0.003, uniform random start, CE) followed by the forward pass that classifies the
  result: images per second on the same model and the same batch of real CIFAR-10 test images, in one
  process. The variants run interleaved round by round (the order rotates every round, so machine noise hits
  all alike), the median over rounds is reported, and ratios are taken against torchattacks within the same
  rounds:
  - ``cure_zoo``: what ``evaluate()`` runs (``attack_batch`` under ``attack_mode``: eval mode, parameters
    frozen, the per-image counter-based start), with weights and images in evaluate's default layout for the
    device (channels_last on the CPU, NCHW on CUDA);
  - ``torchattacks``: ``torchattacks.PGD(model, eps, alpha=0.003, steps=20, random_start=True)(x, y)`` on the
    model as given (NCHW), then one forward;
  - where the default layout is not NCHW, also ``cure_zoo_nchw`` and ``torchattacks_channels_last``: both
    in the other layout, to show that the gain is the layout (the two PGDs do the same passes).
* AutoAttack (standard, L-inf 8/255, through ``cure_zoo.evaluation.autoattack``): wall time on the first
  ``--aa-images`` bundled test images, scaled to 100 images, in evaluate's default layout and in NCHW. On a
  naturally trained model APGD-CE breaks every image, so APGD-T, FAB-T and Square are skipped: robust models
  cost several times more.

Results go to ``benchmarks/results/attacks.json`` and ``attacks.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")

import timm  # noqa: E402
import torch  # noqa: E402
import torchattacks  # noqa: E402

import cure_zoo  # noqa: E402,F401
from cure_zoo.data import load_bundled  # noqa: E402
from cure_zoo.distributed import resolve_device  # noqa: E402
from cure_zoo.evaluation.autoattack import run_autoattack  # noqa: E402
from cure_zoo.evaluation.engine import (  # noqa: E402
    attack_batch,
    attack_mode,
    in_memory_format,
    resolve_memory_format,
)
from cure_zoo.evaluation.protocol import parse_attacks  # noqa: E402
from cure_zoo.io import write_json_atomic, write_text_atomic  # noqa: E402
from cure_zoo.version import library_versions  # noqa: E402

RESULTS = Path(__file__).parent / "results"
EPS, STEP, STEPS = 8 / 255, 0.003, 20


def make_variants(model, x, y, idx, device):
    """Each variant attacks the batch and classifies the result (what an evaluation needs) -> bool [B]."""
    (pgd20,) = parse_attacks("pgd20", EPS)
    layout = resolve_memory_format("auto", device)

    def ours(memory_format):
        def run():
            with attack_mode(model), in_memory_format(model, memory_format):
                return attack_batch(model, pgd20, x.contiguous(memory_format=memory_format), y, idx, seed=0)

        return run

    attack = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=STEPS, random_start=True)

    def ta(memory_format):
        def run():
            with in_memory_format(model, memory_format):
                x_adv = attack(x.contiguous(memory_format=memory_format), y)
                with torch.no_grad():
                    return model(x_adv).argmax(1) == y

        return run

    variants = {"cure_zoo": ours(layout), "torchattacks": ta(torch.contiguous_format)}
    if layout != torch.contiguous_format:  # the same two in the other layout, to show where the gain comes from
        variants |= {"cure_zoo_nchw": ours(torch.contiguous_format), "torchattacks_channels_last": ta(layout)}
    else:  # CUDA: evaluate's default is NCHW; channels_last measured beside it
        variants |= {
            "cure_zoo_channels_last": ours(torch.channels_last),
            "torchattacks_channels_last": ta(torch.channels_last),
        }
    return variants


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="st_resnet18_cifar10.autoattack")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--aa-images", type=int, default=16, help="images for the AutoAttack timing (0: skip)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", default=str(RESULTS / "attacks.json"))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = timm.create_model(args.model, pretrained=True).eval().to(device)
    data = load_bundled("cifar10", "test")
    x, y, idx = data.images[: args.batch].to(device), data.labels[: args.batch].to(device), data.indices[: args.batch]
    variants = make_variants(model, x, y, idx, device)
    names = list(variants)
    for fn in variants.values():  # warm-up (allocator, kernels, torchattacks' first-call checks)
        fn()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            times[n].append(timed(variants[n], device))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names), flush=True)
    pgd_results = {
        n: {
            "median_s": statistics.median(t),
            "images_per_s": args.batch / statistics.median(t),
            "times_s": [round(v, 4) for v in t],
        }
        for n, t in times.items()
    }
    ratios = {
        n: [ta / t for ta, t in zip(times["torchattacks"], times[n], strict=True)] for n in names if n != "torchattacks"
    }

    aa = None
    if args.aa_images:
        sub = data.take(args.aa_images)
        aa = {"images": args.aa_images, "layouts": {}}
        layouts = {"evaluate default": resolve_memory_format("auto", device), "nchw": torch.contiguous_format}
        for label, layout in layouts.items():
            if label == "nchw" and layout == layouts["evaluate default"]:
                continue
            t0 = time.perf_counter()
            with attack_mode(model), in_memory_format(model, layout):
                outcome = run_autoattack(
                    model, sub.images, sub.labels, eps=EPS, seed=0, batch_size=args.aa_images, device=device
                )
            seconds = time.perf_counter() - t0
            aa["layouts"][label] = {
                "memory_format": str(layout).replace("torch.", ""),
                "seconds": round(seconds, 2),
                "seconds_per_100_images": round(seconds * 100 / args.aa_images, 1),
                "robust_accuracy": float(outcome.robust.float().mean()),
                "sub_attacks_run": list(outcome.accuracy_after),
            }
        aa["note"] = "scaled linearly from the images measured; one run per layout (not interleaved); " + (
            "APGD-CE breaks a natural model, so the other three sub-attacks did not run"
            if len(outcome.accuracy_after) < 4
            else "all four sub-attacks ran"
        )

    report = {
        "benchmark": "PGD-20 throughput vs torchattacks; AutoAttack time",
        "model": args.model,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "rounds": args.rounds,
        "pgd20": pgd_results,
        "variants": {
            "cure_zoo": "evaluate()'s path: attack_batch with the model in eval mode, parameters frozen, weights and "
            "images in evaluate's default layout for this device",
            "cure_zoo_nchw": "the same in NCHW (contiguous)",
            "cure_zoo_channels_last": "the same in channels_last",
            "torchattacks": "torchattacks.PGD(model, eps, alpha=0.003, steps=20, random_start=True) on the model as "
            "given (NCHW, parameters requiring grad), then one forward to classify",
            "torchattacks_channels_last": "the same with the model and images in channels_last",
        },
        "speed_vs_torchattacks": {
            n: {"median_of_round_ratios": statistics.median(r), "min": min(r), "max": max(r)} for n, r in ratios.items()
        },
        "autoattack": aa,
        "versions": library_versions() | {"torchattacks": torchattacks.__version__},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(args.out, report)
    md = [
        f"# Attack benchmarks ({args.model}, {report['device']}, batch {args.batch}, {args.rounds} interleaved rounds)",
        "",
        "| variant | median s / batch | images/s | speed vs torchattacks (median of per-round ratios, range) |",
        "|---|---|---|---|",
    ]
    for n in names:
        ratio = f"{statistics.median(ratios[n]):.2f}" if n in ratios else "1.00"
        if n in ratios:
            ratio += f" ({min(ratios[n]):.2f}-{max(ratios[n]):.2f})"
        md.append(f"| {n} | {pgd_results[n]['median_s']:.3f} | {pgd_results[n]['images_per_s']:.1f} | {ratio} |")
    if aa:
        md.append("")
        for label, run in aa["layouts"].items():
            md.append(
                f"AutoAttack standard (L-inf 8/255), {label} ({run['memory_format']}), on {aa['images']} images: "
                f"{run['seconds']} s, i.e. {run['seconds_per_100_images']} s per 100 images."
            )
        md.append(f"({aa['note']}.)")
    write_text_atomic(Path(args.out).with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
