"""PGD-20 throughput of cure_zoo's attack against torchattacks' PGD, and AutoAttack's time per 100 images.

    python benchmarks/bench_attacks.py                       # real AutoAttack ResNet-18, batch 32, CPU
    python benchmarks/bench_attacks.py --device cuda --batch 256 --aa-images 500

What is measured:

* PGD-20 (eps 8/255, step 0.003, uniform random start, CE): images per second of one attack call on the
  same model and the same batch of real CIFAR-10 test images, in one process. Three variants run interleaved
  round by round (the order rotates every round, so machine noise hits all alike), the median over rounds is
  reported, and ratios are taken against torchattacks within the same rounds:
  - ``cure_zoo``: what ``evaluate()`` runs: the per-image counter-based start and ``cure_zoo.attacks.pgd``,
    with parameter gradients switched off for the duration (``evaluate`` does this);
  - ``cure_zoo_params_grad``: the same with the model's parameters left requiring grad (as torchattacks
    gets it), to show what the switch is worth;
  - ``torchattacks``: ``torchattacks.PGD(model, eps, alpha=0.003, steps=20, random_start=True)(x, y)``.
* AutoAttack (standard, L-inf 8/255, through ``cure_zoo.evaluation.autoattack``): wall time on the first
  ``--aa-images`` bundled test images, scaled to 100 images. On a naturally trained model APGD-CE breaks
  every image, so APGD-T, FAB-T and Square are skipped: robust models cost several times more.

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
from cure_zoo.attacks import ce_loss, indexed_uniform_start, pgd  # noqa: E402
from cure_zoo.data import load_bundled  # noqa: E402
from cure_zoo.evaluation import resolve_device  # noqa: E402
from cure_zoo.evaluation.autoattack import run_autoattack  # noqa: E402
from cure_zoo.evaluation.engine import library_versions, parameters_require_grad  # noqa: E402
from cure_zoo.io import write_json_atomic, write_text_atomic  # noqa: E402

RESULTS = Path(__file__).parent / "results"
EPS, STEP, STEPS = 8 / 255, 0.003, 20


def make_variants(model, x, y, idx):
    def ours():
        delta = indexed_uniform_start(x, EPS, 0, idx)
        return pgd(model, x, lambda z: ce_loss(z, y), eps=EPS, step_size=STEP, steps=STEPS, delta=delta)

    def ours_frozen():
        with parameters_require_grad(model, False):
            return ours()

    def ours_params_grad():
        with parameters_require_grad(model, True):
            return ours()

    attack = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=STEPS, random_start=True)

    def ta():
        with parameters_require_grad(model, True):
            return attack(x, y)

    return {"cure_zoo": ours_frozen, "cure_zoo_params_grad": ours_params_grad, "torchattacks": ta}


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
    variants = make_variants(model, x, y, idx)
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
    ratio_rounds = [a / b for a, b in zip(times["torchattacks"], times["cure_zoo"], strict=True)]
    ratio_rounds_pg = [a / b for a, b in zip(times["torchattacks"], times["cure_zoo_params_grad"], strict=True)]

    aa = None
    if args.aa_images:
        sub = data.take(args.aa_images)
        t0 = time.perf_counter()
        with parameters_require_grad(model, False):
            outcome = run_autoattack(
                model, sub.images, sub.labels, eps=EPS, seed=0, batch_size=args.aa_images, device=device
            )
        seconds = time.perf_counter() - t0
        aa = {
            "images": args.aa_images,
            "seconds": round(seconds, 2),
            "seconds_per_100_images": round(seconds * 100 / args.aa_images, 1),
            "robust_accuracy": float(outcome.robust.float().mean()),
            "sub_attacks_run": list(outcome.accuracy_after),
            "note": "scaled linearly from the images measured; APGD-CE breaks a natural model, so the other "
            "three sub-attacks did not run"
            if len(outcome.accuracy_after) < 4
            else "all four sub-attacks ran",
        }

    report = {
        "benchmark": "PGD-20 throughput vs torchattacks; AutoAttack time",
        "model": args.model,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "rounds": args.rounds,
        "pgd20": pgd_results,
        "ratio_cure_zoo_vs_torchattacks": {
            "median_of_round_ratios": statistics.median(ratio_rounds),
            "min": min(ratio_rounds),
            "max": max(ratio_rounds),
        },
        "ratio_cure_zoo_params_grad_vs_torchattacks": {
            "median_of_round_ratios": statistics.median(ratio_rounds_pg),
            "min": min(ratio_rounds_pg),
            "max": max(ratio_rounds_pg),
        },
        "autoattack": aa,
        "versions": library_versions() | {"torchattacks": torchattacks.__version__},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(args.out, report)
    md = [
        f"# Attack benchmarks ({args.model}, {report['device']}, batch {args.batch}, {args.rounds} interleaved rounds)",
        "",
        "| variant | median s / batch | images/s | speed vs torchattacks (median of per-round ratios) |",
        "|---|---|---|---|",
    ]
    for n in names:
        ratio = (
            "1.00"
            if n == "torchattacks"
            else f"{statistics.median(ratio_rounds if n == 'cure_zoo' else ratio_rounds_pg):.2f}"
        )
        md.append(f"| {n} | {pgd_results[n]['median_s']:.3f} | {pgd_results[n]['images_per_s']:.1f} | {ratio} |")
    if aa:
        md += [
            "",
            f"AutoAttack standard (L-inf 8/255) on {aa['images']} images: {aa['seconds']} s, i.e. "
            f"{aa['seconds_per_100_images']} s per 100 images ({aa['note']}).",
        ]
    write_text_atomic(Path(args.out).with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
