"""The device check: what a first CUDA run must settle, in one command (at most ~8 minutes on one H100/H200).

    python benchmarks/gpu_check.py                 # on a GPU: results/gpu_check.json and .md
    python benchmarks/gpu_check.py --tiny          # on the CPU, tiny models and few steps (< 2 min; CI runs it)

Sections (each one runs even if an earlier one failed; a failure is recorded with its error). The report is
rewritten after every section (``finished`` false until the last), so a run stopped at a time limit keeps what
it measured; ``--sections`` runs a subset, in the order given.

1. ``environment``: torch/CUDA/cuDNN versions, the device, and the numerics settings (cudnn.benchmark, TF32).
2. ``sync_debug``: ``torch.cuda.set_sync_debug_mode("warn")`` over 5 trainer steps (CURE): the number of
   host synchronisations warned about (the trainer's one loss read per step is expected).
3. ``masks``: the RGP percentile (kthvalue, sort and, on the CPU, the host selections), bit-equal to NumPy
   (``bench_rgp_percentile.run``).
4. ``steps``: ST/TRADES/CURE step time and peak memory, ResNet-18 and WRN-34-10 at batch 128, fp32 and
   bf16 + channels_last, with CURE/TRADES, CURE/floor (``bench_training.CureFloor``) and the floor/TRADES.
5. ``smoke``: the smoke recipe on this device: run, SIGTERM mid-run (exit 143), resume (exit 0).
6. ``eval``: a natural ResNet-18 (pyautoattack's, else the bundled 5k one) under nat + PGD-20 at two batch
   sizes and both layouts; per-image masks compared with the first configuration.
7. ``autoattack``: AutoAttack time per stage on a robust CIFAR-10-5k model from ``cure_zoo/models/bundled/``
   if one is there (skipped with a note otherwise).
8. ``compile``: graphs compiled over a CURE epoch with ``model.compile`` (inductor on CUDA; eager on the CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_rgp_percentile  # noqa: E402
import bench_training  # noqa: E402

import cure_zoo  # noqa: E402,F401
from cure_zoo.evaluation import evaluate  # noqa: E402
from cure_zoo.evaluation.engine import numerics_settings  # noqa: E402
from cure_zoo.io import write_json_atomic, write_text_atomic  # noqa: E402
from cure_zoo.training import load_recipe, train  # noqa: E402
from cure_zoo.version import library_versions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
BUNDLED = REPO / "cure_zoo" / "models" / "bundled"
ROBUST_5K = ("cure_resnet18_w16_cifar10_5k", "trades_resnet18_w16_cifar10_5k", "at_resnet18_w16_cifar10_5k")
# At least 8 channels into every convolution: torch 2.14.1's oneDNN CPU weight gradient of a channels_last 1x1
# stride-2 convolution with fewer than 8 input channels corrupts the heap (segfault at one thread, hang at two).
TINY_ARGS = {"widths": [8, 8, 8, 8]}
# Images per evaluation, by ``--tiny``: a device has no network, so the full sizes must fit the bundled CIFAR-10
# test subset (1,017 images; checked in tests/test_gpu_check.py). 1,000 at batch 128 ends in a partial batch.
EVAL_IMAGES = {True: 16, False: 1000}
EVAL_BATCH_SIZES = {True: (8, 5), False: (128, 1000)}
AUTOATTACK_IMAGES = {True: 8, False: 500}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "threads": torch.get_num_threads(),
        "numerics_default": numerics_settings(),
        "versions": library_versions(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out |= {"memory_gib": round(props.total_memory / 2**30, 1), "sm_count": props.multi_processor_count}
    return out


def _train_values(tiny: bool, **extra: Any) -> dict[str, Any]:
    values = {
        "method": "cure",
        "data.source": "bundled",
        "data.train_examples": 40 if tiny else 640,
        "optim.batch_size": 24 if tiny else 128,
        "optim.epochs": 1,
        "eval.examples": 8 if tiny else 128,
        "eval.pgd_steps": 1 if tiny else 20,
        "checkpoint.every_steps": 0,
        "run.progress": False,
        "run.tensorboard": False,
    }
    if tiny:
        values |= {"model.args": TINY_ARGS, "attack.steps": 1}
    return values | extra


def sync_debug(device: torch.device, tiny: bool) -> dict[str, Any]:
    """Host synchronisations warned about in 5 CURE trainer steps (CUDA only; on the CPU the steps just run)."""
    values = _train_values(tiny, **{"data.train_examples": 5 * (8 if tiny else 128), "eval.every": 0})
    values["optim.batch_size"] = 8 if tiny else 128
    values["run.device"] = str(device)
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            result = train(load_recipe(None, values), d)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0][:160] for w in caught if "synchroniz" in str(w.message)]
    by_message: dict[str, int] = {}
    for m in syncs:
        by_message[m] = by_message.get(m, 0) + 1
    return {
        "steps": result.global_step,
        "sync_warnings": len(syncs),
        "per_step": len(syncs) / max(result.global_step, 1),
        "distinct": by_message,
        "note": None if device.type == "cuda" else "sync debug mode is CUDA only: steps ran, nothing to count",
    }


def masks(device: torch.device, tiny: bool) -> dict[str, Any]:
    if tiny:
        return {"cifar_resnet18 (tiny)": bench_rgp_percentile.run("cifar_resnet18", device, 1, TINY_ARGS)}
    return {a: bench_rgp_percentile.run(a, device, 5) for a in ("cifar_resnet18", "cifar_wrn34_10")}


def steps(device: torch.device, tiny: bool) -> dict[str, Any]:
    """ST/TRADES/CURE step time (median over interleaved rounds) and peak memory; CURE/TRADES and the floor."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the trainer sets it
    configs = [("cifar_resnet18", "none", False), ("cifar_resnet18", "bf16", True)]
    if not tiny:
        configs += [("cifar_wrn34_10", "none", False), ("cifar_wrn34_10", "bf16", True)]
    rounds = 1 if tiny else 4
    out = {}
    for arch, amp, channels_last in configs:
        args = argparse.Namespace(
            arch=arch, batch=8 if tiny else 128, amp=amp, channels_last=channels_last, compile=False,
            model_args=TINY_ARGS if tiny else {},
        )  # fmt: skip
        names = ["st", "trades", "cure_floor", "cure"]
        setups = {n: bench_training.make_method(n, args, device) for n in names}
        ctx = bench_training.StepContext(1, bench_training.autocast_factory(args, device), lambda tensors: None)
        batch = bench_training.make_batch(args, device, 0)
        times, memory = bench_training.interleaved_times(setups, batch, ctx, device, rounds)
        key = f"{arch} batch {args.batch} {'bf16+channels_last' if amp == 'bf16' else 'fp32'}"
        out[key] = {
            "median_step_s": {n: round(statistics.median(t), 4) for n, t in times.items()},
            "peak_memory_mib": {n: round(max(v) / 2**20, 1) for n, v in memory.items() if v} or None,
            "cure_over_trades": round(bench_training.paired_ratio(times["cure"], times["trades"])["median"], 3),
            "floor_over_trades": round(bench_training.paired_ratio(times["cure_floor"], times["trades"])["median"], 3),
            "cure_over_floor": bench_training.paired_ratio(times["cure"], times["cure_floor"]),
            "rounds": rounds,
        }
        del setups
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def smoke(device: torch.device, tiny: bool) -> dict[str, Any]:
    """The smoke recipe on ``device``: SIGTERM once a mid-epoch checkpoint exists (exit 143), then resume (0)."""
    sets = ["run.progress=false", f"run.device={device}", "checkpoint.every_steps=1"]
    if tiny:
        # two epochs (the recipe's natural warm-up takes the first), two steps each
        sets += ["data.train_examples=32", "optim.batch_size=16", "eval.examples=8"]
        sets += ["model.args={widths: [8, 8, 8, 8]}", "attack.steps=1", "eval.pgd_steps=1"]
    # the repository first, then what the caller had there (on the device, the kit's packages)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "smoke"
        cmd = [
            sys.executable,
            str(REPO / "recipes" / "train.py"),
            "--recipe",
            "smoke_cure_cifar10",
            "--output",
            str(out),
        ]
        for s in sets:
            cmd += ["--set", s]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not (out / "checkpoint.pt").is_file() and proc.poll() is None and time.perf_counter() - t0 < 300:
            time.sleep(0.2)
        interrupted = proc.poll() is None
        if interrupted:
            proc.send_signal(signal.SIGTERM)
        _, err1 = proc.communicate(timeout=300)
        first = {"returncode": proc.returncode, "sigterm_sent": interrupted, "seconds": time.perf_counter() - t0}
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        second = {"returncode": done.returncode, "seconds": round(time.perf_counter() - t0, 1)}
        resumed = "resumed" in done.stdout  # the trainer logs to stdout
        # the check is the interrupt and the resume: a run that ended before its first checkpoint proves neither
        ok = interrupted and first["returncode"] == 143 and resumed and done.returncode == 0
        return {
            "first_run": first,
            "resume_run": second,
            "resumed": resumed,
            "model_written": (out / "model.safetensors").is_file(),
            "ok": ok,
            "stderr_tail": None if ok else (err1[-1500:] + "\n---\n" + done.stderr[-1500:]),
        }


def natural_resnet18() -> tuple[str, torch.nn.Module]:
    """pyautoattack's naturally trained ResNet-18 where its wheel's example file is installed; else the bundled
    natural CIFAR-10-5k ResNet-18 (width 16, small-scale), since the device kit leaves that 45 MB file behind
    to keep the travelling tree under its limit (``benchmarks/device_kit.sh``)."""
    import timm

    from cure_zoo.models._hub import shipped_weights_file
    from cure_zoo.models.zoo import find_entry

    for name in ("st_resnet18_cifar10.autoattack", "st_resnet18_w16_cifar10_5k"):
        if shipped_weights_file(find_entry(name)) is not None:
            return name, timm.create_model(name, pretrained=True).eval()
    raise FileNotFoundError("neither pyautoattack's ResNet-18 nor the bundled natural 5k model is installed")


def eval_layouts(device: torch.device, tiny: bool) -> dict[str, Any]:
    """nat + PGD-20 of a natural ResNet-18 at two batch sizes x two layouts; per-image masks vs the first."""
    name, model = natural_resnet18()
    n = EVAL_IMAGES[tiny]
    runs = {}
    first_masks = None
    for bs in EVAL_BATCH_SIZES[tiny]:
        for layout in ("contiguous", "channels_last"):
            t0 = time.perf_counter()
            r = evaluate(
                model, "cifar10", "nat,pgd20", n_examples=n, batch_size=bs, device=device, memory_format=layout,
                allow_tf32=False, progress=False, notify=lambda m: None,
            )  # fmt: skip
            masks = {k: v.tolist() for k, v in r.masks.items()}
            first_masks = first_masks or masks
            differ = {k: sum(a != b for a, b in zip(masks[k], first_masks[k], strict=True)) for k in masks}
            runs[f"batch {bs}, {layout}"] = {
                "seconds": round(time.perf_counter() - t0, 2),
                "accuracy": {k: r.results[k]["accuracy"] for k in ("nat", "pgd20")},
                "images_differing_from_first": differ,
            }
    return {"model": name, "images": n, "dataset_source": r.dataset["source"], "runs": runs}


def autoattack_5k(device: torch.device, tiny: bool) -> dict[str, Any]:
    found = next((name for name in ROBUST_5K if (BUNDLED / name / "model.safetensors").is_file()), None)
    if found is None:
        return {"skipped": f"no robust CIFAR-10-5k model in {BUNDLED} yet ({', '.join(ROBUST_5K)})"}
    n = AUTOATTACK_IMAGES[tiny]
    t0 = time.perf_counter()
    r = evaluate(
        str(BUNDLED / found), "cifar10", "nat,aa", n_examples=n, batch_size=n, device=device,
        allow_tf32=False, progress=False, notify=lambda m: None,
    )  # fmt: skip
    return {
        "model": found,
        "images": n,
        "seconds": round(time.perf_counter() - t0, 1),
        "nat_accuracy": r.results["nat"]["accuracy"],
        "aa_accuracy": r.results["aa"]["accuracy"],
        "stages": r.results["aa"].get("stages"),
    }


def compile_graphs(device: torch.device, tiny: bool) -> dict[str, Any]:
    import torch._dynamo
    from torch._dynamo.utils import counters

    from cure_zoo.training import trainer
    from cure_zoo.training.modeling import compile_model

    backend = "inductor" if device.type == "cuda" else "eager"
    values = _train_values(tiny, **{"model.compile": True, "run.device": str(device), "eval.batch_size": 4})
    values["data.train_examples"] = 40 if tiny else 320  # 128, 128, 64: a partial last batch
    values["eval.examples"] = 6
    original = trainer.compile_model
    trainer.compile_model = functools.partial(compile_model, backend=backend)
    torch._dynamo.reset()
    counters.clear()
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as d:
            result = train(load_recipe(None, values), d)
    finally:
        trainer.compile_model = original
    return {
        "backend": backend,
        "steps": result.global_step,
        "unique_graphs": counters["stats"]["unique_graphs"],
        "frames": dict(counters["frames"]),
        "seconds": round(time.perf_counter() - t0, 1),
    }


SECTIONS = {
    "environment": lambda d, t: environment(d),
    "sync_debug": sync_debug,
    "masks": masks,
    "steps": steps,
    "smoke": smoke,
    "eval": eval_layouts,
    "autoattack": autoattack_5k,
    "compile": compile_graphs,
}


def markdown(report: dict[str, Any]) -> str:
    title = f"# Device check ({'tiny, ' if report['tiny'] else ''}{report['device']})"
    lines = [title + ("" if report["finished"] else " (unfinished: stopped after the last section below)"), ""]
    for name, section in report["sections"].items():
        lines += [f"## {name} ({section.get('seconds_section', '?')} s)", "", "```json"]
        lines += [json.dumps({k: v for k, v in section.items() if k != "seconds_section"}, indent=1)[:6000]]
        lines += ["```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models and few steps (the CPU check CI runs)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    ap.add_argument("--out", default=None, help="JSON path (default results/gpu_check[_tiny].json)")
    args = ap.parse_args(argv)
    names = args.sections.split(",")
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        ap.error(f"unknown section {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    from cure_zoo.distributed import resolve_device

    device = resolve_device(args.device)
    out = Path(args.out) if args.out else RESULTS / ("gpu_check_tiny.json" if args.tiny else "gpu_check.json")
    report: dict[str, Any] = {"tiny": args.tiny, "device": str(device), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    report |= {"finished": False, "sections": {}}
    start = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        try:
            section = SECTIONS[name](device, args.tiny)
        except Exception as err:  # recorded, and the next section still runs
            section = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
        section["seconds_section"] = round(time.perf_counter() - t0, 1)
        report["sections"][name] = section
        report["seconds_total"] = round(time.perf_counter() - start, 1)
        report["finished"] = name == names[-1]
        # after every section, so a run stopped at a time limit still leaves what it measured
        write_json_atomic(out, report)
        write_text_atomic(out.with_suffix(".md"), markdown(report))
        print(f"{name}: {section['seconds_section']} s{' (error)' if 'error' in section else ''}", flush=True)
    print(f"wrote {out} and {out.with_suffix('.md')} ({report['seconds_total']} s)")
    return 1 if any("error" in s for s in report["sections"].values()) else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
