#!/usr/bin/env python
"""Why CURE's two score gradients cost more than the loss's backward pass, measured on one CURE step's graph.

    python benchmarks/bench_cure_backward.py                       # ResNet-18, batch 32, CPU, 1 thread
    python benchmarks/bench_cure_backward.py --batch 128 --rounds 4

A CURE step (paper Sec. 4, Eq. 7-8) runs, after the clean and adversarial forwards, two vector-Jacobian
products for the RGP score (the gradient of CE on the clean branch, and of CE on the adversarial branch,
with respect to the masked weights) and then the backward pass of the whole loss L, which goes through both
branches. The two score passes together cover the same two branches as L's backward, yet in the profiled
step they took longer. Every variant below starts from a fresh forward of both branches on the same batch
and is timed alone; variants are interleaved round by round (order rotating), and each is reported as the
median over rounds of its ratio to L's backward in the same round:

* ``loss_backward``: ``L.backward()`` (the step's ``cure.backward``), the reference;
* ``score_split``: the step's ``cure.score_gradients``: ``autograd.grad(ce_nat, W)`` then
  ``autograd.grad(ce_adv, W)``, graph retained;
* ``score_split_after_loss``: the same two passes, timed after ``L.backward(retain_graph=True)`` has run
  (untimed) on the graph: do the score passes pay for being first?
* ``loss_after_score``: ``L.backward()`` timed after the two score passes have run (untimed), the order of
  the step: does the second pass over a graph run faster than the first?
* ``step_order``: the two score passes and then ``L.backward()``, timed together (the step's backward work);
* ``loss_first``: ``L.backward(retain_graph=True)`` and then the two score passes, timed together: would the
  step gain from the other order?
* ``score_one_pass``: ``autograd.grad(ce_nat + ce_adv, W)``: both branches in one pass (not the RGP
  gradients, the same work in one traversal): does splitting cost?
* ``score_split_all_params``: the two passes with respect to every parameter (BatchNorm included).
* ``branch_floor``: twice (forward+backward of CE on one branch minus its forward), as the training
  benchmark's floor counts the two passes.

Results go to ``benchmarks/results/cure_backward_b<batch>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import cure_zoo  # noqa: E402,F401
from cure_zoo.attacks.losses import ce_loss, kl_logits_loss  # noqa: E402
from cure_zoo.data import load_bundled  # noqa: E402
from cure_zoo.training.cpu_memory import keep_freed_memory  # noqa: E402
from cure_zoo.training.methods.base import trades_terms  # noqa: E402
from cure_zoo.training.modeling import build_model  # noqa: E402
from cure_zoo.training.recipe import load_recipe  # noqa: E402
from cure_zoo.training.revision import RevisionModel  # noqa: E402
from cure_zoo.training.rgp import masked_parameter_names  # noqa: E402

RESULTS = Path(__file__).parent / "results"
VARIANTS = [
    "loss_backward",
    "score_split",
    "score_split_after_loss",
    "loss_after_score",
    "step_order",
    "loss_first",
    "score_one_pass",
    "score_split_all_params",
    "branch_floor",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="cifar_resnet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="", help="suffix of the result files (e.g. the allocator settings)")
    parser.add_argument("--glibc-defaults", action="store_true", help="glibc malloc defaults")
    args = parser.parse_args()
    allocator = "glibc defaults"
    if os.environ.get("GLIBC_TUNABLES"):
        allocator = os.environ["GLIBC_TUNABLES"]
    elif not args.glibc_defaults and keep_freed_memory():
        allocator = "glibc malloc, mmap off and no trimming (as the trainer sets it)"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    recipe = load_recipe(None, {"method": "cure", "model.architecture": args.arch, "run.seed": 0})
    model = build_model(recipe).train()
    revision = RevisionModel(model, recipe.cure, seed=0)
    cfg = recipe.cure
    masked_names = set(masked_parameter_names(model, cfg.masking))
    masked = [p for n, p in model.named_parameters() if n in masked_names]
    params = list(model.parameters())
    data = load_bundled("cifar10", "train", n=args.batch)
    x, y = data.images, data.labels
    x_adv = (x + (8 / 255) * torch.sign(torch.randn_like(x))).clamp(0, 1)

    def graph():
        z_nat, z_adv = model(x), model(x_adv)
        with torch.no_grad():
            r_nat, r_adv = revision(x), revision(x_adv)
        ce_nat, kl = trades_terms(z_nat, z_adv, y)
        l_cr = kl_logits_loss(z_nat, r_nat).mean() + kl_logits_loss(z_adv, r_adv).mean()
        loss = ce_nat + cfg.beta * kl + cfg.gamma * l_cr
        return ce_nat, ce_loss(z_adv, y).mean(), loss

    faults: dict[str, list[int]] = {v: [] for v in VARIANTS}
    last_faults = [0]

    def timed(fn) -> float:
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t0
        last_faults[0] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        return elapsed

    def run(variant: str) -> float:
        model.zero_grad(set_to_none=True)
        if variant == "branch_floor":
            with torch.no_grad():
                t_fwd = timed(lambda: model(x))
            t_both = timed(lambda: ce_loss(model(x), y).mean().backward())
            return 2 * max(t_both - t_fwd, 0.0)
        ce_nat, ce_adv, loss = graph()
        if variant == "loss_backward":
            return timed(loss.backward)

        def split(wrt=masked):
            torch.autograd.grad(ce_nat, wrt, retain_graph=True, materialize_grads=True)
            torch.autograd.grad(ce_adv, wrt, retain_graph=True, materialize_grads=True)

        if variant == "loss_after_score":
            split()
            return timed(loss.backward)
        if variant == "step_order":
            return timed(lambda: (split(), loss.backward()))
        if variant == "loss_first":
            return timed(lambda: (loss.backward(retain_graph=True), split()))
        if variant == "score_one_pass":
            return timed(lambda: torch.autograd.grad(ce_nat + ce_adv, masked, retain_graph=True))
        if variant == "score_split_after_loss":
            loss.backward(retain_graph=True)
        return timed(lambda: split(params if variant == "score_split_all_params" else masked))

    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds + 1):  # round 0 warms up
        order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
        for v in order:
            last_faults[0] = 0
            t = run(v)
            if r:
                times[v].append(t)
                faults[v].append(last_faults[0])
        if r:
            print(f"round {r}: " + ", ".join(f"{v} {times[v][-1]:.3f}s" for v in VARIANTS), flush=True)

    ref = times["loss_backward"]
    result = {
        "arch": args.arch,
        "batch": args.batch,
        "threads": args.threads,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "masked_tensors": len(masked),
        "allocator": allocator,
        "median_s": {v: statistics.median(t) for v, t in times.items()},
        "ratio_vs_loss_backward": {
            v: statistics.median(a / b for a, b in zip(t, ref, strict=True)) for v, t in times.items()
        },
        "minor_page_faults_median": {v: statistics.median(f) for v, f in faults.items()},
        "times_s": times,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"cure_backward_b{args.batch}{'_' + args.tag if args.tag else ''}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# CURE's score passes vs its loss backward: {args.arch}, batch {args.batch}, cpu ({args.threads} "
        f"thread(s), torch {torch.__version__}), {args.rounds} interleaved rounds",
        "",
        f"malloc: {result['allocator']}",
        "",
        "| variant | median | x loss backward (median of round ratios) | minor page faults (median) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {v} | {result['median_s'][v]:.3f} s | {result['ratio_vs_loss_backward'][v]:.2f} | "
        f"{result['minor_page_faults_median'][v]:,.0f} |"
        for v in VARIANTS
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
