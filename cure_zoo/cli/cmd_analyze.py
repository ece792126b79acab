"""``cure-zoo analyze``: the paper's analyses of trained models (see docs/analysis.md).

- ``cka MODEL_A MODEL_B``: linear CKA between every pair of layers (Sec. 3.2, Fig. 3 and 12) -> JSON + PNG.
- ``minpert MODEL``: the smallest L-inf perturbation that flips each image (App. D.1, Fig. 8) -> JSON + PNGs.
- ``corruptions MODEL --data-dir D``: accuracy on CIFAR-10-C / CIFAR-100-C (Sec. 7, App. D.2) -> JSON + PNG.
- ``grad-stats RUN_DIR...``: the gradient statistics a run logged (Sec. 5, Fig. 6 and 10) -> JSON + PNGs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import options

MODEL_HELP = "registered name, hf-hub:ORG/NAME, run directory or .safetensors"


def _add_shared_options(
    p: argparse.ArgumentParser,
    *,
    models: bool = True,
    test_set: bool = True,
    n_default: int | None = 1000,
    n_help: str | None = None,
) -> None:
    """The options the analysis subcommands share, added in one order: ``--dataset``, ``--n-examples``, then
    (``test_set``: its images are the test set's) ``--data-dir`` and ``--no-download``, ``--batch-size`` and
    ``--device`` (all only when it runs ``models``), and ``--out``. ``n_default``/``n_help``: ``--n-examples``'
    default and help (default: the first N test images)."""
    if models:
        p.add_argument("--dataset", default="cifar10", help=options.DATASET_HELP)
        n_help = n_help or f"first N test images (default {n_default})"
        p.add_argument("--n-examples", type=options.positive_int, default=n_default, help=n_help)
        if test_set:
            options.add_test_data(p)
        p.add_argument("--batch-size", type=options.positive_int, default=256, help="images per batch (default 256)")
        options.add_device(p)
    p.add_argument("--out", metavar="DIR", required=True, help="folder for the JSON and the figures")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="the paper's analyses: layer-wise CKA, minimum perturbations, natural corruptions, gradient statistics",
        description="Analyses of trained models from the CURE paper; each writes a JSON and a figure to --out.",
    )
    sub = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)

    cka = sub.add_parser(
        "cka",
        help="linear CKA between every pair of layers of two models (Sec. 3.2, Fig. 3 and 12)",
        description="Linear CKA (Kornblith et al. 2019) between every layer of MODEL_A and every layer of "
        "MODEL_B on the same test images, with the minibatch estimator (Nguyen et al. 2021, unbiased HSIC). "
        "Writes cka.json (the matrix) and cka.png (a heatmap) to --out.",
        epilog="Example: cure-zoo analyze cka runs/at runs/cure --n-examples 2000 --out analysis/at_vs_cure",
    )
    cka.add_argument("model_a", metavar="MODEL_A", help=MODEL_HELP)
    cka.add_argument("model_b", metavar="MODEL_B", help=f"{MODEL_HELP} (may equal MODEL_A)")
    cka.add_argument("--layers-a", default=None, help="comma-separated module names, or 'logits' (default: blocks)")
    cka.add_argument("--layers-b", default=None, help="as --layers-a, for MODEL_B")
    cka.add_argument(
        "--b-inputs",
        default="clean",
        help="clean (default) or a PGD attack (pgd20, cw20) whose images, crafted against MODEL_B, it sees "
        "instead (Fig. 3: natural vs adversarial representations)",
    )
    cka.add_argument("--eps", default="8/255", help="budget of --b-inputs' attack (default 8/255)")
    cka.add_argument("--seed", type=int, default=0, help="seed of --b-inputs' random start (default 0)")
    _add_shared_options(cka)
    cka.set_defaults(run=run_cka)

    mp = sub.add_parser(
        "minpert",
        help="the smallest L-inf perturbation that flips each image (App. D.1, Fig. 8)",
        description="Per image, the smallest L-inf budget at which an attack flips the model's prediction: "
        "bisection over PGD's eps (default; precision eps-max / 2^iterations) or pyautoattack's FAB. Several "
        "models are shown side by side, as in the paper's Fig. 8. Writes minpert_<i>.json per model, "
        "minpert_examples.png and minpert_distribution.png to --out.",
        epilog="Example: cure-zoo analyze minpert runs/at runs/cure --n-examples 500 --out analysis/minpert",
    )
    mp.add_argument("models", metavar="MODEL", nargs="+", help=MODEL_HELP)
    mp.add_argument("--method", choices=["bisect", "fab"], default="bisect", help="bisect (default) or fab")
    mp.add_argument("--eps-max", default="32/255", help="largest budget searched (default 32/255)")
    mp.add_argument("--iterations", type=int, default=None, help="bisection steps (10) or FAB iterations (100)")
    mp.add_argument("--steps", type=int, default=20, help="PGD steps per bisection probe (default 20)")
    mp.add_argument("--seed", type=int, default=0, help="seed of the PGD starts / FAB (default 0)")
    mp.add_argument("--show", type=int, default=8, help="images in the example figure (default 8)")
    _add_shared_options(mp, n_default=200)
    mp.set_defaults(run=run_minpert)

    co = sub.add_parser(
        "corruptions",
        help="accuracy on CIFAR-10-C / CIFAR-100-C (Sec. 7, App. D.2)",
        description="Accuracy on the corruption benchmark read from --data-dir (the official .npy layout: "
        "CIFAR-10-C/<corruption>.npy and labels.npy), per corruption and severity, per group (blur, digital, "
        "noise, weather), at severity 3 (the paper) and averaged over severities (RobustBench). Writes "
        "corruptions.json and corruptions.png to --out.",
        epilog="Example: cure-zoo analyze corruptions runs/cure --data-dir ~/data --out analysis/cure_c",
    )
    co.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    co.add_argument("--data-dir", required=True, help="CIFAR-10-C folder (or its parent)")
    co.add_argument("--corruptions", default="standard", help="standard (the 15, default), all (+4 extra) or names")
    co.add_argument("--severities", default="1,2,3,4,5", help="comma-separated, default 1,2,3,4,5")
    _add_shared_options(co, test_set=False, n_default=None, n_help="first N images of each severity (default all)")
    co.set_defaults(run=run_corruptions)

    gs = sub.add_parser(
        "grad-stats",
        help="per-layer gradient magnitude and share of entries updated by RGP during training (Sec. 5, Fig. 6, 10)",
        description="Reads the gradient statistics that training runs logged into metrics.jsonl (recipe key "
        "run.grad_stats_every) and draws, per run, each parameter tensor's mean gradient magnitude and the "
        "percentage of its entries updated (not zeroed by the RGP mask; for a method without the mask, the "
        "percentage that would pass it) at the early, middle and late phases of training. Writes "
        "grad_stats_<i>.json and grad_stats_<i>.png per run and grad_magnitude.png (all runs over training) to --out.",
        epilog="Example: cure-zoo analyze grad-stats runs/trades runs/cure --out analysis/gradients",
    )
    gs.add_argument("runs", metavar="RUN_DIR", nargs="+", help="training run directory (trained with grad stats on)")
    _add_shared_options(gs, models=False)
    gs.set_defaults(run=run_grad_stats)


def _images(args: argparse.Namespace):
    from cure_zoo.data import load_testset

    return load_testset(
        args.dataset, data_dir=args.data_dir, n=args.n_examples, download=False if args.no_download else "auto"
    )


def _out_dir(path: str) -> Path:
    from cure_zoo.errors import CureZooError

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise CureZooError(f"--out {out} exists and is not a folder; pass a folder for the results")
    return out


def run_cka(args: argparse.Namespace) -> int:
    from cure_zoo.analysis import cka_matrix
    from cure_zoo.errors import CureZooError

    out = _out_dir(args.out)
    if args.batch_size < 4:
        raise CureZooError(
            f"--batch-size must be at least 4 for CKA (the unbiased HSIC needs 4), got {args.batch_size}"
        )
    images = _images(args)
    result = cka_matrix(
        args.model_a,
        args.model_b,
        images,
        layers_a=args.layers_a,
        layers_b=args.layers_b,
        batch_size=args.batch_size,
        device=args.device,
        b_inputs=args.b_inputs,
        eps=args.eps,
        seed=args.seed,
    )
    json_path = result.save(out / "cka.json")
    png_path = result.plot(out / "cka.png")
    diag = [float(result.matrix[i, i]) for i in range(min(result.matrix.shape))]
    print(
        f"linear CKA of {len(result.layers_a)} x {len(result.layers_b)} layers on {result.images['n_used']} "
        f"{images.dataset} images; diagonal: {' '.join(f'{v:.2f}' for v in diag)}"
    )
    print(f"wrote {json_path} and {png_path}")
    return 0


def _display_names(specs: list[str]) -> list[str]:
    """Models' names in a figure legend: a run directory's or weights file's name, else the spec itself; the
    specs as given where two would share a name."""
    names = [Path(s).name.removesuffix(".safetensors") if Path(s).exists() else s for s in specs]
    return names if len(set(names)) == len(names) else list(specs)


def run_minpert(args: argparse.Namespace) -> int:
    from cure_zoo.analysis.minpert import minimum_perturbation, plot_distribution, plot_examples

    out = _out_dir(args.out)
    images = _images(args)
    results = []
    for i, spec in enumerate(args.models):
        r = minimum_perturbation(
            spec, images, method=args.method, eps_max=args.eps_max, iterations=args.iterations, steps=args.steps,
            batch_size=args.batch_size, seed=args.seed, device=args.device,
        )  # fmt: skip
        results.append(r)
        s = r.summary()
        median = "above eps-max" if s.get("q50") is None else f"{s['q50'] * 255:.2f}/255"
        print(f"{spec}: {s['n_flipped']} of {s['n_correct']} correct images flipped, median {median}")
        print(f"wrote {r.save(out / f'minpert_{i}.json')}")
    names = _display_names(args.models)
    print(f"wrote {plot_examples(results, out / 'minpert_examples.png', n=args.show, names=names)}")
    print(f"wrote {plot_distribution(results, out / 'minpert_distribution.png', names=names)}")
    return 0


def run_corruptions(args: argparse.Namespace) -> int:
    from cure_zoo.analysis.corruptions import PAPER_SEVERITY, evaluate_corruptions
    from cure_zoo.errors import CureZooError

    out = _out_dir(args.out)
    try:
        severities = tuple(int(v) for v in args.severities.split(",") if v.strip())
    except ValueError:
        raise CureZooError(f"--severities takes numbers 1-5, e.g. 1,3,5; got {args.severities!r}") from None
    result = evaluate_corruptions(
        args.model, args.data_dir, dataset=args.dataset, corruptions=args.corruptions, severities=severities,
        n_examples=args.n_examples, batch_size=args.batch_size, device=args.device,
    )  # fmt: skip
    obj = result.to_json()
    for label, block in (("severity 3", obj["severity_3"]), ("mean over severities", obj["mean_over_severities"])):
        if block["per_group"]:
            groups = ", ".join(f"{g} {v:.2f}" for g, v in block["per_group"].items())
            print(f"{label}: {groups}")
    if obj["robustbench_corruptions_acc"] is not None:
        print(f"RobustBench corruptions_acc (15 corruptions x 5 severities): {obj['robustbench_corruptions_acc']:.2f}")
    print(f"wrote {result.save(out / 'corruptions.json')}")
    if PAPER_SEVERITY in severities:
        print(f"wrote {result.plot(out / 'corruptions.png')}")
    return 0


def run_grad_stats(args: argparse.Namespace) -> int:
    from cure_zoo.analysis.gradstats import load_grad_stats, phase_table, plot_grad_magnitude, plot_grad_stats
    from cure_zoo.io import write_json_atomic

    out = _out_dir(args.out)
    loaded = [(run, load_grad_stats(run)) for run in args.runs]  # every run read before anything is written
    out.mkdir(parents=True, exist_ok=True)
    names = _display_names(list(args.runs))
    for i, ((run, stats), name) in enumerate(zip(loaded, names, strict=True)):
        table = dict(run=str(run), **phase_table(stats))
        shown = ", ".join(f"{k} step {v['global_step']}" for k, v in table["phases"].items())
        print(f"{run}: {table['records']} gradient-statistics records ({stats[0]['kind']}); {shown}")
        print(f"wrote {write_json_atomic(out / f'grad_stats_{i}.json', table)}")
        print(f"wrote {plot_grad_stats(stats, out / f'grad_stats_{i}.png', name)}")
    runs = dict(zip(names, [stats for _, stats in loaded], strict=True))
    print(f"wrote {plot_grad_magnitude(runs, out / 'grad_magnitude.png')}")
    return 0
