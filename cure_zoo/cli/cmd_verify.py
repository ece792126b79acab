"""``cure-zoo verify MODEL``: re-measure a model's published claims and say, per metric, whether they hold."""

from __future__ import annotations

import argparse

from . import options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "verify",
        help="re-measure a published model's claims (exit 0: all hold, 1: one does not, 2: bad input)",
        description="Load MODEL as a user would (sha256-checked), read its claims (config.json's cure_zoo.claims and "
        "the eval.json they cite), re-run the same protocol (attacks, eps, seed, batch sizes) on the same images or "
        "the first N of them, and print claim vs measured per metric. Same images: a metric must match within a "
        "small allowance for documented nondeterminism; a subset: the per-image record must match and the claim "
        "must lie in the 99% interval of the measurement. Interrupted runs resume from finished chunks. Exit "
        "status: 0 every claim holds, 1 one does not, 2 usage or input error (e.g. corrupted weights).",
        epilog="Example: cure-zoo verify hf-hub:my-lab/cure_resnet18_cifar10 --n-examples 500 --attacks nat,pgd20",
    )
    p.add_argument("model", metavar="MODEL", help="registered name, hf-hub:ORG/NAME[@REVISION] or a run directory")
    p.add_argument(
        "--n-examples", type=options.positive_int, default=None, help="verify on the first N of the claim's images"
    )
    p.add_argument("--attacks", default=None, help="comma-separated subset of the claimed attacks (default: all)")
    options.add_device(p)
    p.add_argument(
        "--batch-size", type=options.positive_int, default=None, help="images per batch (default: the claim's)"
    )
    options.add_test_data(p, download=False)
    p.add_argument(
        "--chunk-size", type=options.positive_int, default=500, help="images per resumable chunk (default 500)"
    )
    p.add_argument("--state-dir", default=None, help="where finished chunks are kept until the run completes")
    p.add_argument("--json", metavar="OUT", default=None, help="write the verdicts and the measurement to OUT")
    options.add_allow_tf32(p, why="as the claims' per-image comparison assumes")
    options.add_no_progress(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from cure_zoo.hub.verify import format_report, verify, write_report

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks else None
    if args.state_dir is not None:  # an unusable folder is a usage error (2), found before anything is measured
        _check_state_dir(args.state_dir)
    if args.json:  # checked before anything is measured; never the weights, config or evaluation it reads
        from cure_zoo.io import check_output_path
        from cure_zoo.rundir import model_files

        check_output_path(args.json, inputs=model_files(args.model, claims=True))
    report = verify(
        args.model,
        n_examples=args.n_examples,
        attacks=attacks,
        device=args.device,
        batch_size=args.batch_size,
        data_dir=args.data_dir,
        chunk_size=args.chunk_size,
        state_root=args.state_dir,
        allow_tf32=args.allow_tf32,
        progress=not args.no_progress,
        log=lambda m: print(m, file=sys.stderr),
    )
    print(format_report(report))
    if args.json:
        write_report(report, args.json)
    return 0 if report.passed else 1


def _check_state_dir(folder: str) -> None:
    """Refuse a --state-dir that cannot hold chunks, without writing anything (it is checked before any work,
    and a refused command leaves the filesystem as it was): its nearest existing folder must be a writable
    folder on a writable filesystem with space left."""
    import os

    from cure_zoo.errors import CureZooError

    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    problem = None
    if not os.path.isdir(existing):
        problem = f"{existing} is not a folder"
    elif hasattr(os, "statvfs"):  # POSIX
        fs = os.statvfs(existing)
        if fs.f_flag & os.ST_RDONLY:
            problem = "Read-only file system"
        elif not os.access(existing, os.W_OK | os.X_OK):
            problem = "Permission denied"
        elif fs.f_bavail * fs.f_frsize < 1 << 20:
            problem = "No space left on device"
    elif not os.access(existing, os.W_OK):  # elsewhere: what os.access can tell without writing
        problem = "Permission denied"
    if problem:
        raise CureZooError(f"--state-dir {folder} cannot hold verify's chunks ({problem}); pass a writable folder")
