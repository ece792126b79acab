#!/usr/bin/env python
"""The CIFAR-10-5k campaign: train every method of the track, evaluate each model, write its card, and ship
the outputs inside the package (``cure_zoo/models/bundled/<zoo name>/``).

    python benchmarks/cifar10_5k/campaign.py                  # everything, two processes side by side
    python benchmarks/cifar10_5k/campaign.py --stage train    # only the training runs
    python benchmarks/cifar10_5k/campaign.py --stage eval --n-examples 500
    python benchmarks/cifar10_5k/campaign.py --stage analyze     # natural-vs-PGD-20 CKA of each model
    python benchmarks/cifar10_5k/campaign.py --stage card        # eval.json + card from the chunks so far

Every stage resumes: a finished stage of a model (its files in the bundled folder) is skipped, and a training
run killed half-way continues from its checkpoint in ``--runs-dir`` (checkpoints never leave that folder).
Each process gets one intra-op thread: on this 2-core machine two processes with one thread each are much
faster than one with two. With ``--commit`` each finished model's outputs are committed to git at once, so a
stopped campaign loses at most the work in progress. Wall times go to ``benchmarks/cifar10_5k/campaign.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "cure_zoo" / "models" / "bundled"
LOG = Path(__file__).resolve().parent / "campaign.jsonl"
# What a finished training run ships (the checkpoint stays behind).
RUN_FILES = ("model.safetensors", "config.json", "train_hparams.yaml", "metrics.jsonl")
# The evaluation: every attack of the card on the same images, in chunks of CHUNK test images (each chunk one
# process and one file, committed when done), so that a stopped campaign resumes between chunks. A chunk is
# measured by cure_zoo's chunked evaluation (cure_zoo.evaluation.evaluate_chunked): its file is the chunk's
# cure_zoo.eval/1 JSON, written atomically with a sidecar (<file>.sha256) recording its sha256 and inputs.
ATTACKS = "nat,pgd20,pgd100,cw20,aa,sweep"
CHUNK = 100
CHUNKS = Path(__file__).resolve().parent / "eval_chunks"
CHUNK_NAME = "chunk_{start:04d}_{stop:04d}.json"  # test images start to stop - 1


@dataclass(frozen=True)
class Run:
    key: str  # recipe stem before _resnet18_w16_cifar10_5k, and the run directory's name
    zoo_name: str
    init_from: str | None = None  # key of the run whose final weights this one starts from
    cost: float = 1.0  # relative CPU time per epoch (measured: ST 0.1, AT 0.8, TRADES 1.0, CURE 1.3)

    @property
    def recipe(self) -> str:
        return f"{self.key}_resnet18_w16_cifar10_5k"


RUNS = [
    Run("st", "st_resnet18_w16_cifar10_5k", cost=0.1),
    Run("at", "at_resnet18_w16_cifar10_5k", cost=0.8),
    Run("trades", "trades_resnet18_w16_cifar10_5k", cost=1.0),
    Run("trades_from_st", "trades_resnet18_w16_cifar10_5k.from_st", "st", cost=1.0),
    Run("cure", "cure_resnet18_w16_cifar10_5k", "st", cost=1.3),
    Run("cure_official", "cure_resnet18_w16_cifar10_5k.official", "st", cost=1.3),
]


def log(record: dict) -> None:
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
    with LOG.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


# The code the children run (--code-dir): by default this checkout; a frozen copy (e.g. a git worktree at one
# commit) keeps a long campaign independent of edits made to the checkout while it runs.
CODE = ROOT


def child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = str(CODE) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def commit(paths: list[Path], message: str) -> None:
    """Commit just these paths (other work in the tree is left alone); retried while git is busy."""
    rel = [str(p.relative_to(ROOT)) for p in paths]
    for attempt in range(20):
        add = subprocess.run(["git", "add", "-f", "--", *rel], cwd=ROOT, capture_output=True, text=True)
        done = add.returncode == 0 and (
            subprocess.run(["git", "commit", "-q", "-m", message, "--", *rel], cwd=ROOT, capture_output=True).returncode
            == 0
        )
        if done:
            return
        time.sleep(3 + attempt)
    print(f"warning: could not commit {rel}", file=sys.stderr)


class Stage:
    """A set of jobs (one subprocess each) run at most ``jobs`` at a time, dependencies first."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs

    def run(self, todo: list[Run], start, finished, ready) -> None:
        running: dict[str, tuple[subprocess.Popen, float, Run]] = {}
        # runs that others start from go first, then the longest (shortest overall time for the stage)
        needed = {r.init_from for r in RUNS}
        pending = sorted(todo, key=lambda r: (r.key not in needed, -r.cost))
        failed: list[str] = []
        while pending or running:
            for r in [r for r in pending if ready(r)][: self.jobs - len(running)]:
                pending.remove(r)
                running[r.key] = (start(r), time.time(), r)
            time.sleep(5)
            for key, (proc, t0, r) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[key]
                wall = round(time.time() - t0, 1)
                if proc.returncode == 0:
                    finished(r, wall)
                else:
                    failed.append(key)
                    log({"run": key, "event": "failed", "returncode": proc.returncode, "wall_s": wall})
            if not running and pending and not any(ready(r) for r in pending):
                raise SystemExit(f"cannot continue: {[r.key for r in pending]} wait for failed runs {failed}")
        if failed:
            raise SystemExit(f"failed: {failed}")


def train_stage(args: argparse.Namespace) -> None:
    runs_dir = Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)

    bundled = Path(args.bundled_dir)

    def done(r: Run) -> bool:
        return (bundled / r.zoo_name / "config.json").is_file()

    def start(r: Run) -> subprocess.Popen:
        cmd = [
            sys.executable,
            str(CODE / "recipes" / "train.py"),
            "--recipe",
            r.recipe,
            "--output",
            str(runs_dir / r.key),
        ]
        if r.init_from:
            init = bundled / _run(r.init_from).zoo_name
            cmd += ["--set", f"model.init={os.path.relpath(init, ROOT)}"]
        cmd += [f"--set={s}" for s in args.set]
        log({"run": r.key, "event": "train-start", "command": cmd[1:]})
        out = (runs_dir / f"{r.key}.log").open("a")
        return subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT)

    def finished(r: Run, wall: float) -> None:
        dest = bundled / r.zoo_name
        dest.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            shutil.copy2(runs_dir / r.key / name, dest / name)
        config = json.loads((dest / "config.json").read_text())
        training = config["cure_zoo"]["training"]
        epochs = training["epochs"]
        log(
            {
                "run": r.key,
                "event": "trained",
                "wall_s": wall,
                "train_time_s": training["train_time_s"],
                "min_per_epoch": round(training["train_time_s"] / 60 / epochs, 2),
                "last_eval": training["last_eval"],
            }
        )
        if args.commit:
            commit([dest, LOG], f"cifar10_5k: {r.zoo_name} trained ({epochs} epochs, {wall / 60:.0f} min wall)")

    todo = [r for r in RUNS if r.key in args.only and not done(r)]
    Stage(args.jobs).run(todo, start, finished, lambda r: r.init_from is None or done(_run(r.init_from)))


def chunk_path(r: Run, start: int, stop: int, chunks: Path = CHUNKS) -> Path:
    return chunks / r.zoo_name / CHUNK_NAME.format(start=start, stop=stop)


def eval_chunk(model_dir: str, start: int, stop: int, out: str) -> None:
    """One chunk of the evaluation (run in its own process): test images start to stop - 1, written to OUT."""
    import torch

    from cure_zoo.data import load_bundled
    from cure_zoo.evaluation import evaluate_chunked

    torch.set_num_threads(1)
    images = load_bundled("cifar10", "test").slice(start, stop)
    out_path = Path(out)
    evaluate_chunked(
        model_dir,
        images,
        ATTACKS,
        state_dir=out_path.parent,
        keyed=False,  # the chunks of one model share its folder
        keep=True,
        chunk_size=CHUNK,  # one chunk: stop - start <= CHUNK
        chunk_name=out_path.name.replace("{", "{{").replace("}", "}}"),  # exactly OUT
        batch_size=CHUNK,
        aa_batch_size=CHUNK,
        device="cpu",
        progress=False,
    )


def eval_stage(args: argparse.Namespace) -> None:
    from cure_zoo.io import checked_sidecar

    bundled = Path(args.bundled_dir)
    n = args.n_examples
    # Breadth first: every model gets the first chunk before any gets the second.
    jobs = []
    for start in range(0, n, CHUNK):
        for r in RUNS:
            if r.key in args.only and (bundled / r.zoo_name / "config.json").is_file():
                stop = min(n, start + CHUNK)
                if not chunk_path(r, start, stop, Path(args.chunks_dir)).is_file():
                    jobs.append(Run(f"{r.key}:{start}:{stop}", r.zoo_name, cost=-start))

    def start_job(job: Run) -> subprocess.Popen:
        key, start, stop = job.key.split(":")
        out = chunk_path(_run(key), int(start), int(stop), Path(args.chunks_dir))
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, __file__, "--eval-chunk", str(bundled / job.zoo_name), start, stop, str(out)]
        log({"run": key, "event": "eval-start", "images": [int(start), int(stop)]})
        return subprocess.Popen(cmd, cwd=ROOT, env=child_env())

    def finished(job: Run, wall: float) -> None:
        key, start, stop = job.key.split(":")
        path = chunk_path(_run(key), int(start), int(stop), Path(args.chunks_dir))
        result = json.loads(path.read_text())
        accuracy = {k: v["accuracy"] for k, v in result["results"].items() if isinstance(v, dict) and "accuracy" in v}
        log({"run": key, "event": "evaluated", "images": [int(start), int(stop)], "wall_s": wall, "acc": accuracy})
        if args.commit:
            shipped = [path, *[p for p in [checked_sidecar(path)] if p.is_file()], LOG]
            commit(shipped, f"cifar10_5k: {job.zoo_name} evaluated on test images {start}-{int(stop) - 1}")

    Stage(args.jobs).run(jobs, start_job, finished, lambda job: True)


CKA_N = 1000  # test images of the CKA analysis (--cka-n-examples)


def analyze_stage(args: argparse.Namespace) -> None:
    """The paper's Fig. 3 for each trained model: linear CKA between its layers on natural test images and on
    its own PGD-20 images (``cure-zoo analyze cka DIR DIR --b-inputs pgd20``, one process with one thread
    each), copied to ``<bundled dir>/analysis/cka_nat_vs_adv.json`` for the card; a model that has it is
    skipped."""
    import tempfile

    from cure_zoo.rundir import CKA_ANALYSIS_FILE

    bundled = Path(args.bundled_dir)
    todo = [
        r
        for r in RUNS
        if r.key in args.only
        and (bundled / r.zoo_name / "config.json").is_file()
        and not (bundled / r.zoo_name / CKA_ANALYSIS_FILE).is_file()
    ]
    tmp = Path(tempfile.mkdtemp(prefix="cka_", dir=args.runs_dir if Path(args.runs_dir).is_dir() else None))

    def start(r: Run) -> subprocess.Popen:
        dest = bundled / r.zoo_name
        cmd = [sys.executable, "-m", "cure_zoo.cli.main", "analyze", "cka", str(dest), str(dest)]
        cmd += ["--b-inputs", "pgd20", "--n-examples", str(args.cka_n_examples), "--no-download", "--device", "cpu"]
        cmd += ["--out", str(tmp / r.key)]
        log({"run": r.key, "event": "analyze-start", "command": cmd[3:]})
        return subprocess.Popen(cmd, cwd=ROOT, env=child_env())

    def finished(r: Run, wall: float) -> None:
        data = json.loads((tmp / r.key / "cka.json").read_text())
        diagonal = [row[i] for i, row in enumerate(data["cka"])]
        target = bundled / r.zoo_name / CKA_ANALYSIS_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp / r.key / "cka.json", target)
        mean = round(sum(diagonal) / len(diagonal), 4)
        log({"run": r.key, "event": "analyzed", "wall_s": wall, "n": data["images"]["n_used"], "cka_diag": mean})
        if args.commit:
            commit([target, LOG], f"cifar10_5k: {r.zoo_name} CKA natural vs PGD-20 ({data['images']['n_used']} images)")

    try:
        Stage(args.jobs).run(todo, start, finished, lambda r: True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def card_stage(args: argparse.Namespace) -> None:
    """eval.json from the chunks measured so far (contiguous from image 0), then the model card."""
    from cure_zoo.evaluation.result import EvalResult

    bundled = Path(args.bundled_dir)
    for r in RUNS:
        if r.key not in args.only or not (bundled / r.zoo_name / "config.json").is_file():
            continue
        parts, start = [], 0
        while found := sorted((Path(args.chunks_dir) / r.zoo_name).glob(f"chunk_{start:04d}_*.json")):
            parts.append(EvalResult.load(found[0]))
            start = int(found[0].stem.split("_")[2])
        if not parts:
            continue
        merged = EvalResult.concat(parts)
        dest = bundled / r.zoo_name
        merged.save(dest / "eval.json")
        card = subprocess.run(
            [sys.executable, "-m", "cure_zoo.cli.main", "card", str(dest)], cwd=ROOT, env=child_env(), text=True
        )
        log({"run": r.key, "event": "card", "images": start, "returncode": card.returncode})
        if card.returncode != 0:
            continue
        published = pin(r, dest)
        if args.commit:
            commit([dest, LOG, published], f"cifar10_5k: {r.zoo_name} card, eval.json and pin ({start} test images)")


PINNED = ("nat", "pgd20", "pgd100", "cw20", "aa", "nrr_cw", "nrr_aa")


def pin(r: Run, dest: Path) -> Path:
    """published.json (beside the bundled folder): the shipped weights' sha256 and the card's headline claims
    (what cure-zoo list shows)."""
    claims = json.loads((dest / "config.json").read_text())["cure_zoo"]["claims"]
    results = claims["results"]
    headline = {
        k: round(results[k]["accuracy"] if isinstance(results[k], dict) else results[k], 2)
        for k in PINNED
        if k in results
    }
    path = dest.parent.parent / "published.json"
    published = json.loads(path.read_text()) if path.is_file() else {}
    published[r.zoo_name] = {
        "source": "package",
        "sha256": claims["weights_sha256"],
        "claims": headline,
        "n_examples": claims["dataset"]["n_examples"],
    }
    path.write_text(json.dumps(dict(sorted(published.items())), indent=2) + "\n")
    return path


LABELS = {
    "st": "ST",
    "at": "PGD-AT",
    "trades": "TRADES",
    "trades_from_st": "TRADES from ST",
    "cure": "CURE (paper preset)",
    "cure_official": "CURE (authors' code preset)",
}
TABLE = [("nat", "Nat"), ("pgd20", "PGD-20"), ("pgd100", "PGD-100"), ("cw20", "CW-inf"), ("aa", "AA")]


def accuracy_cell(summary: dict) -> str:
    """A table cell: accuracy with its 95% Wilson interval, e.g. ``44.0 [39.7, 48.4]``."""
    lo, hi = summary["ci95"]
    return f"{summary['accuracy']:.1f} [{lo:.1f}, {hi:.1f}]"


def report_stage(args: argparse.Namespace) -> None:
    """results.json, results.md and tradeoff.png from each model's eval.json and training record."""
    bundled, out_dir = Path(args.bundled_dir), Path(__file__).resolve().parent
    trained = {}
    if LOG.is_file():
        for line in LOG.read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == "trained":
                trained[record["run"]] = record
    rows = []
    for r in RUNS:
        eval_path = bundled / r.zoo_name / "eval.json"
        if r.key not in args.only or not eval_path.is_file():
            continue
        results = json.loads(eval_path.read_text())["results"]
        training = json.loads((bundled / r.zoo_name / "config.json").read_text())["cure_zoo"]["training"]
        row = {"run": r.key, "model": r.zoo_name, "method": LABELS[r.key], "n": results["nat"]["n"]}
        for key, _ in TABLE:
            if key in results:
                row[key] = {k: results[key][k] for k in ("accuracy", "correct", "n", "ci95")}
        for key in ("nrr_cw", "nrr_aa"):
            if key in results:
                row[key] = results[key]["value"] if isinstance(results[key], dict) else results[key]
        row["epochs"] = training["epochs"]
        row["min_per_epoch"] = round(training["train_time_s"] / 60 / training["epochs"], 2)
        row["wall_min"] = round(trained[r.key]["wall_s"] / 60, 1) if r.key in trained else None
        rows.append(row)
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "| method | Nat | PGD-20 | PGD-100 | CW-inf | AA | NRR (CW) | NRR (AA) | min/epoch | n |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row["method"]]
        for key, _ in TABLE:
            v = row.get(key)
            cells.append(accuracy_cell(v) if v else "-")
        cells += [f"{row[k]:.1f}" if row.get(k) is not None else "-" for k in ("nrr_cw", "nrr_aa")]
        cells += [f"{row['min_per_epoch']:.1f}", str(row["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot_tradeoff(rows, out_dir / "tradeoff.png")


def _plot_tradeoff(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for row in rows:
        robust_key = "aa" if "aa" in row else "cw20"
        nat, rob = row["nat"], row[robust_key]
        xerr = [[nat["accuracy"] - nat["ci95"][0]], [nat["ci95"][1] - nat["accuracy"]]]
        yerr = [[rob["accuracy"] - rob["ci95"][0]], [rob["ci95"][1] - rob["accuracy"]]]
        ax.errorbar(nat["accuracy"], rob["accuracy"], xerr=xerr, yerr=yerr, fmt="o", capsize=3, label=row["method"])
    ax.set_xlabel("natural accuracy (%)")
    ax.set_ylabel("AutoAttack accuracy (%), L-inf 8/255")
    n = rows[0]["n"] if rows else 0
    ax.set_title(f"CIFAR-10-5k track (small scale), first {n} test images, 95% Wilson intervals", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)


def _run(key: str) -> Run:
    return next(r for r in RUNS if r.key == key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=["train", "eval", "analyze", "card", "report", "all"], default="all")
    parser.add_argument("--n-examples", type=int, default=500, help="test images to evaluate (of 1,017)")
    parser.add_argument("--cka-n-examples", type=int, default=CKA_N, help=f"test images of the CKA (default {CKA_N})")
    parser.add_argument("--eval-chunk", nargs=4, metavar=("MODEL_DIR", "START", "STOP", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "cifar10_5k"))
    parser.add_argument("--jobs", type=int, default=2, help="processes side by side (one thread each)")
    parser.add_argument("--only", default=",".join(r.key for r in RUNS), help="comma-separated run keys")
    parser.add_argument("--bundled-dir", default=str(BUNDLED), help="where finished models go (testing)")
    parser.add_argument("--code-dir", default=str(ROOT), help="the cure_zoo checkout the children run")
    parser.add_argument("--chunks-dir", default=str(CHUNKS), help="where evaluation chunks go (testing)")
    parser.add_argument("--set", action="append", default=[], help="recipe override for every run (testing)")
    parser.add_argument("--commit", action="store_true", help="git-commit each model's outputs when it finishes")
    args = parser.parse_args(argv)
    args.only = set(args.only.split(","))
    global CODE
    CODE = Path(args.code_dir).resolve()
    if args.eval_chunk:
        model_dir, start, stop, out = args.eval_chunk
        eval_chunk(model_dir, int(start), int(stop), out)
        return 0
    if args.stage in ("train", "all"):
        train_stage(args)
    if args.stage in ("eval", "all"):
        eval_stage(args)
    if args.stage in ("analyze", "all"):
        analyze_stage(args)
    if args.stage in ("card", "all"):
        card_stage(args)
    if args.stage in ("report", "all"):
        report_stage(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
