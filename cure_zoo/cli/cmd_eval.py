"""``cure-zoo eval``: measure a model's natural and robust accuracy (Nat, PGD-20/100, CW-inf, AutoAttack).

Runs under ``torchrun`` too: each process takes a contiguous slice of the images, rank 0 prints the table and
writes the JSON.
"""

from __future__ import annotations

import argparse
import sys

from . import options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="measure natural and robust accuracy (PGD, CW-inf, AutoAttack)",
        description="Evaluate a model under L-inf (or, with --norm L2, L2) attacks on a test split: nat (clean), "
        "pgd20, pgd100, cw20 (CW-inf margin PGD, confidence 50), aa (AutoAttack standard), sweep (PGD-20 at "
        "0.25/255..8/255); NAME@EPS runs an attack at another eps. Prints accuracies with 95%% Wilson "
        "intervals, the per-sample worst case and NRR, and writes everything (with per-sample masks) to --json.",
        epilog="Example: cure-zoo eval st_resnet18_cifar10.autoattack --attacks nat,pgd20 --n-examples 200",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="registered name, hf-hub:ORG/NAME, run directory, .safetensors, any timm model name, or a Python "
        "factory package.module:function (with --weights)",
    )
    p.add_argument(
        "--weights", metavar="FILE", default=None, help="a .safetensors state dict for a timm name or a factory"
    )
    p.add_argument("--dataset", default="cifar10", help=options.DATASET_HELP)
    p.add_argument("--attacks", default="nat,pgd20,cw20,aa", help="comma-separated (default: nat,pgd20,cw20,aa)")
    p.add_argument(
        "--n-examples",
        type=options.positive_int,
        default=None,
        help="first N test images in official order (default: all)",
    )
    p.add_argument(
        "--eps", default=None, help="budget in [0, 1] pixel units, e.g. 8/255 or 0.031 (default: 8/255 L-inf, 0.5 L2)"
    )
    p.add_argument("--norm", default="Linf", help="threat model: Linf (default, the paper's) or L2 (RobustBench's)")
    p.add_argument("--batch-size", type=options.positive_int, default=128, help="images per batch (default 128)")
    p.add_argument(
        "--aa-batch-size",
        type=options.positive_int,
        default=None,
        help="AutoAttack's batch size (default: --batch-size)",
    )
    options.add_device(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the PGD starts and AutoAttack (default 0)")
    p.add_argument(
        "--memory-format",
        choices=["auto", "channels_last", "contiguous"],
        default="auto",
        help="layout of weights and images during the attacks; auto (default): channels_last on CPU, NCHW on CUDA",
    )
    options.add_test_data(p)
    p.add_argument("--json", metavar="OUT", default=None, help="write the full result (protocol, masks) to OUT")
    p.add_argument(
        "--robustbench-json",
        metavar="OUT",
        default=None,
        help="also write a RobustBench leaderboard entry (model_info format) to OUT; needs nat and aa on the full "
        "test split (see docs/robustbench.md)",
    )
    p.add_argument(
        "--robustbench-nonstandard",
        action="store_true",
        help="write the RobustBench entry even when the evaluation is not RobustBench's (its footnote says how)",
    )
    options.add_allow_tf32(p)
    options.add_no_progress(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cure_zoo.errors import CureZooError
    from cure_zoo.evaluation import evaluate, parse_attacks, parse_eps
    from cure_zoo.evaluation.protocol import default_eps, eps_label, parse_norm

    norm = parse_norm(args.norm)
    eps = default_eps(norm) if args.eps is None else parse_eps(args.eps, norm)
    specs = parse_attacks(args.attacks, eps, norm)  # bad names/eps fail before anything is loaded
    if args.robustbench_json:  # what can be known before hours of AutoAttack
        names = {s.name for s in specs}
        if not {"nat", "aa"} <= names:
            raise CureZooError("--robustbench-json needs --attacks with nat and aa (AutoAttack standard)")
        if args.n_examples is not None and not args.robustbench_nonstandard:
            raise CureZooError(
                "--robustbench-json needs the full test split (no --n-examples), or --robustbench-nonstandard"
            )
    if args.json:  # a path the writer refuses, or the weights themselves, fail before any attack runs
        from cure_zoo.io import check_output_path
        from cure_zoo.rundir import model_files

        check_output_path(args.json, inputs=model_files(args.model))
    from cure_zoo.models.loader import load_model

    # a bad model fails before the dataset is looked for (and announced)
    model = load_model(args.model, weights=args.weights)

    import torch.distributed as dist

    from cure_zoo.distributed import init_distributed

    joined = not dist.is_initialized()
    init_distributed(args.device)  # under torchrun: join the group; evaluate() then shards the images
    joined = joined and dist.is_initialized()
    try:
        rank = dist.get_rank() if dist.is_initialized() else 0
        result = evaluate(
            model,
            args.dataset,
            args.attacks,
            n_examples=args.n_examples,
            batch_size=args.batch_size,
            aa_batch_size=args.aa_batch_size,
            device=args.device,
            seed=args.seed,
            eps=eps,
            norm=norm,
            memory_format=args.memory_format,
            allow_tf32=args.allow_tf32,
            data_dir=args.data_dir,
            download=False if args.no_download else "auto",
            progress=not args.no_progress,
            notify=None if rank == 0 else (lambda message: None),
        )
    finally:
        if joined:
            dist.destroy_process_group()
    if rank != 0:
        return 0
    m, d, p = result.model, result.dataset, result.protocol
    print(
        f"{m['name']} on {d['n_examples']} {d['name']} {d['split']} images, {norm} eps {eps_label(eps, norm)}, "
        f"seed {p['seed']}, {p['device']} x{p['world_size']}, {result.time_s:.1f} s"
    )
    print(result.format_table())
    for flag in result.flags:
        print(f"warning: {flag}", file=sys.stderr)
    if args.json:
        path = result.save(args.json)
        print(f"wrote {path}")
    if args.robustbench_json:  # after --json: a refusal here loses no measurement
        from cure_zoo.evaluation.robustbench import robustbench_entry, run_zoo_config
        from cure_zoo.io import write_json_atomic

        entry = robustbench_entry(
            result, allow_nonstandard=args.robustbench_nonstandard, zoo_config=run_zoo_config(args.model)
        )
        print(f"wrote {write_json_atomic(args.robustbench_json, entry)} (RobustBench model_info)")
    return 0
