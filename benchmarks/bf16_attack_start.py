"""Does bf16 autocast weaken the TRADES/CURE training attack's start ``x + 0.001 N(0, I)``?

    python benchmarks/bf16_attack_start.py            # natural ResNet-18 (pyautoattack's), 64 images, CPU
    python benchmarks/bf16_attack_start.py --model trades_resnet18_w16_cifar10_5k --images 128   # a robust one

Under bf16 autocast the first convolution casts its input to bf16 (8 significant bits), so ``x + delta`` with
``|delta| ~ 0.001`` rounds back to ``bf16(x)`` wherever the noise is below half a bf16 step of the pixel
(every pixel above ~0.25): the first forward then sees (almost) the clean image, where the KL objective and
its gradient vanish. Measured side by side in one process on the same images and the same noise:

* ``fp32``: the attack without autocast (the reference);
* ``bf16``: the whole attack under bf16 autocast (what ``run.amp=bf16`` runs);
* ``bf16_fp32_first``: the first PGD iteration in float32, the rest under bf16 autocast.

For 1, 2, 3 and 10 PGD steps (eps 8/255, step 2/255, the recipes'), the strength is the mean
``KL(p(x) || p(x_adv))`` of the final iterate and the accuracy on it, both from one float32 forward (so all
variants are judged alike); also the fraction of pixels whose start rounds back to ``bf16(x)``. Results go to
``benchmarks/results/bf16_attack_start.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import timm  # noqa: E402
import torch  # noqa: E402

import cure_zoo  # noqa: E402,F401
from cure_zoo.attacks.losses import kl_logits_loss  # noqa: E402
from cure_zoo.attacks.pgd import frozen_parameters, pgd  # noqa: E402
from cure_zoo.data import load_bundled  # noqa: E402
from cure_zoo.io import write_json_atomic, write_text_atomic  # noqa: E402

RESULTS = Path(__file__).parent / "results"
EPS, STEP, START_STD = 8 / 255, 2 / 255, 0.001


def attack(model, x, clean, delta, steps: int, variant: str) -> torch.Tensor:
    def objective(z: torch.Tensor) -> torch.Tensor:
        return kl_logits_loss(z.float(), clean)

    bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
    if variant == "fp32":
        return pgd(model, x, objective, eps=EPS, step_size=STEP, steps=steps, delta=delta)
    if variant == "bf16":
        with bf16:
            return pgd(model, x, objective, eps=EPS, step_size=STEP, steps=steps, delta=delta)
    first = pgd(model, x, objective, eps=EPS, step_size=STEP, steps=1, delta=delta)
    if steps == 1:
        return first
    with bf16:
        return pgd(model, x, objective, eps=EPS, step_size=STEP, steps=steps - 1, delta=first - x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="st_resnet18_cifar10.autoattack", help="a zoo name with weights")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="default: results/bf16_attack_start[_<model>].json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    default = args.model == "st_resnet18_cifar10.autoattack"
    out = args.out or RESULTS / ("bf16_attack_start.json" if default else f"bf16_attack_start_{args.model}.json")
    model = timm.create_model(args.model, pretrained=True).eval()
    data = load_bundled("cifar10", "train", n=args.images)
    x, y = data.images, data.labels
    delta = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * START_STD
    rounded_back = ((x + delta).bfloat16() == x.bfloat16()).float().mean().item()
    results: dict = {}
    with frozen_parameters(model):
        with torch.no_grad():
            clean = model(x).float()
        for steps in (1, 2, 3, 10):
            row = {}
            for variant in ("fp32", "bf16", "bf16_fp32_first"):
                t0 = time.perf_counter()
                x_adv = attack(model, x, clean, delta, steps, variant)
                with torch.no_grad():
                    z = model(x_adv).float()
                row[variant] = {
                    "mean_kl": kl_logits_loss(z, clean).mean().item(),
                    "accuracy": (z.argmax(1) == y).float().mean().item() * 100,
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            results[str(steps)] = row
            print(steps, {v: round(r["mean_kl"], 4) for v, r in row.items()}, flush=True)
    report = {
        "benchmark": "bf16 autocast vs float32 TRADES-KL attack from x + 0.001 N(0, I)",
        "model": args.model + (" (natural)" if default else ""),
        "images": args.images,
        "pixels_rounding_back_to_x_in_bf16": rounded_back,
        "by_steps": results,
        "torch": torch.__version__,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(out, report)
    md = [
        f"# bf16 attack start ({report['model']}, {args.images} bundled train images, CPU)",
        "",
        f"Pixels of x + 0.001 N(0, I) that round back to bf16(x): {100 * rounded_back:.1f}%.",
        "",
        "| PGD steps | variant | mean KL(p(x) ‖ p(x_adv)) | accuracy on x_adv (%) |",
        "|---|---|---|---|",
    ]
    for steps, row in results.items():
        for variant, r in row.items():
            md.append(f"| {steps} | {variant} | {r['mean_kl']:.4f} | {r['accuracy']:.1f} |")
    write_text_atomic(Path(out).with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
