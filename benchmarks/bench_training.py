"""Step time and peak memory of one training step of ST, AT, TRADES and CURE, on the same model and batch.

    python benchmarks/bench_training.py                      # ResNet-18, batch 32, CPU
    python benchmarks/bench_training.py --arch cifar_wrn34_10 --batch 128 --device cuda

What is measured (one optimisation step each: batch preparation, the method's forwards/attack/backwards,
the SGD step and, for CURE, the revision update):

* time: all methods run in the same process, interleaved round by round (the order rotates every round), so
  machine noise hits all of them alike; the median over rounds is reported and ratios are taken against
  TRADES and ST of the same rounds;
* peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` after a reset, in the same process; on CPU (where
  torch has no allocator statistics), the rise of the process's peak resident set (``VmHWM``, reset through
  ``/proc/self/clear_refs`` just before the first step) over the resident set at that moment, measured in a
  fresh process per (method, round), interleaved the same way.

``cure_official_style`` is a re-creation of the official code's ``rgp_soft`` step cost structure, for scale:
four full backward passes (CE_nat, KL, total, L_CR, each into ``.grad`` and cloned), revision-model forwards
that build autograd graphs, and a NumPy percentile with a host copy per masked tensor.

Results go to ``benchmarks/results/training_steps.json`` (and a Markdown table beside it).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import cure_zoo  # noqa: E402,F401
from cure_zoo.data import load_bundled  # noqa: E402
from cure_zoo.training.cpu_memory import keep_freed_memory  # noqa: E402
from cure_zoo.training.data import crop_flip  # noqa: E402
from cure_zoo.training.methods import Batch, StepContext, build_method  # noqa: E402
from cure_zoo.training.methods.cure import Cure  # noqa: E402
from cure_zoo.training.modeling import build_model, compile_model  # noqa: E402
from cure_zoo.training.recipe import load_recipe  # noqa: E402
from cure_zoo.training.rgp import masked_parameter_names  # noqa: E402

METHODS = ["st", "at", "trades", "cure_floor", "cure", "cure_official_style"]
RESULTS = Path(__file__).parent / "results"


class OfficialStyleCure(Cure):
    """The official ``rgp_soft`` step's costs (not its exact numerics): 4 backward passes, graph-building
    revision forwards, NumPy percentile per masked tensor."""

    def step(self, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        cfg, x, y = self.cfg, batch.x, batch.y
        x_adv = self.adversarial(batch, ctx, self.recipe.attack)
        z_nat, z_adv = self.forward(x), self.forward(x_adv)
        r_nat, r_adv = self.revision.module(x), self.revision.module(x_adv)  # graphs built, then detached
        ce_nat = F.cross_entropy(z_nat, y)
        kl = F.kl_div(F.log_softmax(z_adv, 1), F.softmax(z_nat, 1), reduction="sum") / len(x)
        cr = sum(
            F.kl_div(F.log_softmax(z, 1), F.softmax(r.detach(), 1), reduction="sum") / len(x)
            for z, r in ((z_nat, r_nat), (z_adv, r_adv))
        )
        total = ce_nat + cfg.beta * kl + cfg.gamma * cr
        params = list(self.model.parameters())
        grads = []
        for i, loss in enumerate((ce_nat, kl, total, cr)):
            self.model.zero_grad(set_to_none=True)
            loss.backward(retain_graph=i < 3)
            grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params])
        names = set(masked_parameter_names(self.model, "rgp_soft"))
        for i, (name, p) in enumerate(self.model.named_parameters()):
            g = grads[2][i]
            if name in names:
                score = (cfg.alpha * grads[0][i] + (1 - cfg.alpha) * grads[1][i]).cpu().numpy()
                mask = torch.from_numpy(score >= np.percentile(score, cfg.p)).to(g.device)
                g = g * mask
            p.grad = g
        return {"loss": total.detach()}


class CureFloor(Cure):
    """What CURE must spend at the least: its own step without the masks and without the revision update, i.e.
    a TRADES-style step plus the two per-objective backward passes of the RGP score and the revision model's
    two no-grad forwards (and CURE's extra loss terms, which are negligible)."""

    def apply_masks(self, g_nat: list[torch.Tensor], g_other: list[torch.Tensor]) -> torch.Tensor:
        return torch.zeros(len(g_nat), dtype=torch.long)

    def after_step(self, epoch: int) -> dict[str, float]:
        return {}


def make_method(name: str, args: argparse.Namespace, device: torch.device):
    method = "cure" if name.startswith("cure") else name
    recipe = load_recipe(
        None,
        {
            "method": method,
            "model.architecture": args.arch,
            "model.args": getattr(args, "model_args", {}),
            "run.seed": 0,
            "model.channels_last": args.channels_last,
        },
    )
    model = build_model(recipe).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = compile_model(model) if args.compile else model
    special = {"cure_official_style": OfficialStyleCure, "cure_floor": CureFloor}
    method_obj = special[name](recipe, model, forward) if name in special else build_method(recipe, model, forward)
    method_obj.prepare()
    method_obj.on_epoch_start(1)
    params = [p for p in model.parameters() if p.requires_grad]
    o = recipe.optim
    optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return method_obj, optimizer


def make_batch(args: argparse.Namespace, device: torch.device, step: int) -> Batch:
    data = load_bundled("cifar10", "train", n=args.batch)
    g = torch.Generator(device=device).manual_seed(step)
    x = crop_flip(data.images.to(device), g)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def noise(kind: str) -> torch.Tensor:
        return (torch.randn if kind == "normal" else torch.rand)(x.shape, generator=g, device=device)

    return Batch(x, data.labels.to(device), 1.0, noise)


def autocast_factory(args: argparse.Namespace, device: torch.device):
    if args.amp == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def one_step(method, optimizer, batch: Batch, ctx: StepContext, device: torch.device) -> None:
    optimizer.zero_grad(set_to_none=True)
    stats = method.step(batch, ctx)
    float(stats["loss"])  # the trainer's per-step synchronisation
    optimizer.step()
    method.after_step(1)
    if device.type == "cuda":
        torch.cuda.synchronize()


def start_state(setups: dict) -> dict:
    """Every method's state to start a step from: the one initial weights (the same in every model, one seed;
    checked) and each method's own optimizer and method state."""
    names = list(setups)
    weights = copy.deepcopy(setups[names[0]][0].model.state_dict())
    per_method: dict[str, dict] = {}
    for n in names:
        method, optimizer = setups[n]
        own = method.model.state_dict()
        if any(not torch.equal(own[k], v) for k, v in weights.items()):
            raise ValueError(f"{n} starts from other weights than {names[0]}: build every model with one seed")
        per_method[n] = copy.deepcopy({"optim": optimizer.state_dict(), "method": method.state_dict()})
    return {"weights": weights, "per_method": per_method}


def restore_start(setups: dict, start: dict, name: str) -> None:
    """Put method ``name`` (model, optimizer, method state) back to ``start`` (:func:`start_state`)."""
    method, optimizer = setups[name]
    method.model.load_state_dict(start["weights"])  # copies into the parameters
    optimizer.load_state_dict(copy.deepcopy(start["per_method"][name]["optim"]))  # may alias, so a fresh copy
    method.load_state_dict(start["per_method"][name]["method"])


def interleaved_times(
    setups: dict, batch: Batch, ctx: StepContext, device: torch.device, rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Step time of each method over ``rounds`` rounds (after one warm-up round), the methods interleaved in
    each round and their order rotating round by round; on CUDA also each step's peak memory above the start.

    Every step of every method starts from one state (:func:`start_state`), restored outside the timing, and
    every method is left in it. Each method stepping its own model on the one fixed batch made the CPU step
    times drift apart (a TRADES step rose from 22 s to 126 s at batch 128); saving each method's state after
    its own warm-up step still left the methods on different weights, and the floor ran steadily 5% slower
    than CURE. Weights alone move a CPU step's time, so all methods must step from the same ones."""
    names = list(setups)
    start = start_state(setups)
    times: dict[str, list[float]] = {n: [] for n in names}
    memory: dict[str, list[int]] = {n: [] for n in names}
    for r in range(rounds + 1):  # round 0 warms up (and, with cudnn.benchmark, autotunes)
        for n in names[r % len(names) :] + names[: r % len(names)]:
            method, optimizer = setups[n]
            restore_start(setups, start, n)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                start_mem = torch.cuda.memory_allocated(device)
            t0 = time.perf_counter()
            one_step(method, optimizer, batch, ctx, device)
            if r > 0:
                times[n].append(time.perf_counter() - t0)
                if device.type == "cuda":
                    memory[n].append(torch.cuda.max_memory_allocated(device) - start_mem)
        if r > 0:
            print(f"round {r}: " + ", ".join(f"{n} {times[n][-1]:.3f}s" for n in names), flush=True)
    for n in names:
        restore_start(setups, start, n)
    return times, memory


def paired_ratio(a: list[float], b: list[float], resamples: int = 10000) -> dict[str, float]:
    """Median over rounds of the per-round ratio a/b (both timed in the same round), with a 95% bootstrap
    interval of that median (rounds resampled)."""
    ratios = np.array([x / y for x, y in zip(a, b, strict=True)])
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(ratios, size=(resamples, len(ratios))), axis=1)
    lo, hi = np.percentile(medians, [2.5, 97.5])
    return {"median": float(np.median(ratios)), "ci95": [float(lo), float(hi)], "rounds": len(ratios)}


def step_breakdown(setups: dict, batch: Batch, ctx: StepContext, device: torch.device, steps: int) -> dict:
    """Where one step's time goes, from the profiler scopes the methods open (``attack``, ``cure.*``), for
    TRADES and CURE: each of ``steps`` steps profiled on its own from the methods' start state, the median
    milliseconds of each part over the steps (with the range) and its share of the median step. For CURE also
    the per-step ratio of the two score passes to the loss's backward pass (one profiled step is noisy)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    out = {}
    start = start_state(setups)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    # on CUDA the CPU time of a scope is its launch time; the GPU time of its kernels is what a step costs
    total = (lambda e: e.device_time_total) if device.type == "cuda" else (lambda e: e.cpu_time_total)
    for name in ("trades", "cure"):
        if name not in setups:
            continue
        method, optimizer = setups[name]
        per_step: list[dict[str, float]] = []
        for _ in range(steps):
            restore_start(setups, start, name)
            with profile(activities=activities) as prof:
                with record_function("step"):
                    one_step(method, optimizer, batch, ctx, device)
            per_step.append({e.key: total(e) / 1e3 for e in prof.key_averages() if e.key == "step"
                             or e.key == "attack" or e.key.startswith("cure.")})  # fmt: skip
        for t in per_step:
            t["other (loss terms, SGD step, batch)"] = t["step"] - sum(v for k, v in t.items() if k != "step")
        step_ms = statistics.median(t["step"] for t in per_step)
        keys = sorted((k for k in per_step[0] if k != "step"), key=lambda k: -statistics.median(t[k] for t in per_step))
        keys.append(keys.pop(keys.index("other (loss terms, SGD step, batch)")))
        parts = {k: statistics.median(t[k] for t in per_step) for k in keys}
        out[name] = {
            "steps": steps,
            "step_ms": step_ms,
            "parts_ms": parts,
            "parts_range_ms": {k: [min(t[k] for t in per_step), max(t[k] for t in per_step)] for k in keys},
            "parts_share": {k: v / step_ms for k, v in parts.items()},
        }
        if "cure.score_gradients" in parts and "cure.backward" in parts:
            ratios = [t["cure.score_gradients"] / t["cure.backward"] for t in per_step]
            out[name]["score_passes_vs_loss_backward"] = {"median": statistics.median(ratios), "all": ratios}
    return out


def _vm(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


def memory_child(args: argparse.Namespace) -> None:
    """Print the peak-RSS rise of two steps of ``args.memory_child`` (fresh process, CPU)."""
    device = torch.device("cpu")
    method, optimizer = make_method(args.memory_child, args, device)
    batch = make_batch(args, device, 0)
    ctx = StepContext(1, autocast_factory(args, device), lambda tensors: None)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    base = _vm("VmRSS")
    for _ in range(2):
        one_step(method, optimizer, batch, ctx, device)
    print(json.dumps({"peak_rise_bytes": _vm("VmHWM") - base}))


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(result: dict) -> str:
    """The results as a Markdown table (also regenerated from a JSON file with ``--markdown-from``)."""
    setup, names = result["setup"], list(result["step_time_s"])
    lines = [
        f"# Training step benchmark: {setup['arch']}, batch {setup['batch']}, {setup['device']} "
        f"({setup['torch_threads']} threads, torch {setup['torch']})",
        "",
        "| method | step time (median) | x TRADES | x ST | peak memory (median) | memory x TRADES |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        ratios = result["ratios_vs_trades"].get(n, {})
        mem = result["peak_memory_bytes"][n]["median"]
        mem_s = f"{mem / 2**20:.1f} MiB" if mem is not None else "-"
        mem_r = f"{ratios['memory']:.2f}" if ratios.get("memory") else "-"
        vs_trades, vs_st = ratios.get("time"), result["time_ratio_vs_st"].get(n)
        lines.append(
            f"| {n} | {result['step_time_s'][n]['median']:.3f} s | {_ratio(vs_trades)} | {_ratio(vs_st)} | "
            f"{mem_s} | {mem_r} |"
        )
    lines += [
        "",
        f"Time ratios: median over {setup['rounds']} rounds of the per-round ratio (methods interleaved in one "
        f"process, order rotating each round). Memory: {setup['memory_method']}. CPU allocator: "
        f"{setup.get('cpu_allocator', 'allocator defaults')}.",
    ]
    if result.get("cure_vs_floor"):
        c = result["cure_vs_floor"]
        lines.append(
            f"CURE against its floor (`cure_floor`: CURE's own step without the masks and the revision update, "
            f"timed in the same rounds): {c['median']:.3f}x, 95% bootstrap interval of the median "
            f"{c['ci95'][0]:.3f}-{c['ci95'][1]:.3f} over {c['rounds']} rounds."
        )
    if result.get("step_breakdown"):
        breakdown = result["step_breakdown"]
        steps = next(iter(breakdown.values())).get("steps")
        lines += ["", f"Where the time goes (profiler scopes, {steps or 'the'} profiled steps per method: median ms "
                  "per step, range over the steps, share of the median step):", ""]  # fmt: skip
        lines += ["| method | part | ms | range | share |", "|---|---|---|---|---|"]
        for method, b in breakdown.items():
            ranges = b.get("parts_range_ms", {})
            for part, ms in b["parts_ms"].items():
                lo_hi = f"{ranges[part][0]:.0f}-{ranges[part][1]:.0f}" if part in ranges else "-"
                lines.append(f"| {method} | {part} | {ms:.0f} | {lo_hi} | {100 * b['parts_share'][part]:.1f}% |")
            lines.append(f"| {method} | whole step | {b['step_ms']:.0f} | | 100% |")
        score = breakdown.get("cure", {}).get("score_passes_vs_loss_backward")
        if score:
            lines.append("")
            lines.append(
                f"CURE's two score passes against its loss's backward pass, per profiled step: median "
                f"{score['median']:.2f}x (" + ", ".join(f"{r:.2f}" for r in score["all"]) + ")."
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="cifar_resnet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--memory-rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["none", "bf16"], default="none")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--breakdown-steps", type=int, default=2, help="profiled steps per method (0: none)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--markdown-from", help="only rewrite the Markdown table of this results JSON")
    parser.add_argument("--output", default=str(RESULTS / "training_steps.json"))
    parser.add_argument(
        "--glibc-defaults", action="store_true", help="on CPU, keep glibc's malloc defaults (the trainer does not)"
    )
    args = parser.parse_args()
    freed_memory_kept = args.device == "cpu" and not args.glibc_defaults and keep_freed_memory()
    if args.memory_child:
        memory_child(args)
        return
    if args.markdown_from:
        path = Path(args.markdown_from)
        path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))
        return
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the trainer sets it
    names = args.methods.split(",")
    setups = {n: make_method(n, args, device) for n in names}
    ctx = StepContext(1, autocast_factory(args, device), lambda tensors: None)
    batch = make_batch(args, device, 0)
    times, memory = interleaved_times(setups, batch, ctx, device, args.rounds)
    if device.type == "cpu":
        for r in range(args.memory_rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for n in order:
                cmd = [sys.executable, __file__, "--memory-child", n, "--arch", args.arch, "--batch", str(args.batch)]
                cmd += ["--amp", args.amp] + (["--channels-last"] if args.channels_last else [])
                cmd += ["--glibc-defaults"] if args.glibc_defaults else []
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                memory[n].append(json.loads(out)["peak_rise_bytes"])
                print(f"memory round {r}: {n} {memory[n][-1] / 2**20:.1f} MiB", flush=True)
    breakdown = step_breakdown(setups, batch, ctx, device, args.breakdown_steps) if args.breakdown_steps else None
    med_t = {n: statistics.median(v) for n, v in times.items()}

    def paired(n: str, base: str) -> float:
        return paired_ratio(times[n], times[base])["median"]

    med_m = {n: statistics.median(v) for n, v in memory.items() if v}
    result = {
        "what": "one training step (attack, forwards, backwards, SGD step, revision update)",
        "setup": {
            "arch": args.arch,
            "batch": args.batch,
            "device": str(device),
            "amp": args.amp,
            "channels_last": args.channels_last,
            "compile": args.compile,
            "torch_threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "rounds": args.rounds,
            "cpu_allocator": "glibc malloc, mmap off and no trimming (as the trainer sets it)"
            if freed_memory_kept
            else "allocator defaults",
            "memory_method": "torch.cuda.max_memory_allocated"
            if device.type == "cuda"
            else "peak RSS rise (VmHWM after clear_refs), fresh process per (method, round)",
        },
        "step_time_s": {n: {"median": med_t[n], "all": times[n]} for n in names},
        "peak_memory_bytes": {n: {"median": med_m.get(n), "all": memory[n]} for n in names},
        "ratios_vs_trades": {
            n: {"time": paired(n, "trades"), "memory": med_m[n] / med_m["trades"] if med_m else None}
            for n in names
            if "trades" in med_t
        },
        "time_ratio_vs_st": {n: paired(n, "st") for n in names if "st" in med_t},
        "cure_vs_floor": paired_ratio(times["cure"], times["cure_floor"])
        if {"cure", "cure_floor"} <= set(times)
        else None,
        "ratio_note": "time ratios are medians of per-round ratios (same round, interleaved)",
        "step_breakdown": breakdown,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
