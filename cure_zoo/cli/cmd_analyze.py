"""``cure-zoo analyze``: the paper's analyses of trained models (see docs/analysis.md).

- ``cka MODEL_A MODEL_B``: linear CKA between every pair of layers (Sec. 3.2, Fig. 3 and 12) -> JSON + PNG.
- ``minpert MODEL``: the smallest L-inf perturbation that flips each image (App. D.1, Fig. 8) -> JSON + PNGs.
- ``corruptions MODEL --data-dir D``: accuracy on CIFAR-10-C / CIFAR-100-C (Sec. 7, App. D.2) -> JSON + PNG.
"""

from __future__ import annotations

import argparse
from pathlib import Path

MODEL_HELP = "registered name, hf-hub:ORG/NAME, run directory or .safetensors"


def _common(p: argparse.ArgumentParser, *, images: bool = True) -> None:
    p.add_argument("--dataset", default="cifar10", help="cifar10 (default), cifar100 or svhn")
    if images:
        p.add_argument("--n-examples", type=int, default=1000, help="first N test images (default 1000)")
        p.add_argument("--data-dir", default=None, help="folder with the torchvision dataset; default $CURE_ZOO_DATA")
        p.add_argument("--no-download", action="store_true", help="never download the dataset")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch (default 256)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--out", metavar="DIR", required=True, help="folder for the JSON and the figures")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="the paper's analyses: layer-wise CKA, minimum perturbations, natural corruptions",
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
    _common(cka)
    cka.set_defaults(run=run_cka)


def _images(args: argparse.Namespace):
    from cure_zoo.data import load_testset
    from cure_zoo.errors import CureZooError

    if args.n_examples is not None and args.n_examples <= 0:
        raise CureZooError(f"--n-examples must be positive, got {args.n_examples}")
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
