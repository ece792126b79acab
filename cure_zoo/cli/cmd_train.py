"""``cure-zoo train`` (``recipes/train.py`` runs the same code): train a model from a YAML recipe.

    cure-zoo train --recipe smoke_cure_cifar10 --output runs/smoke
    torchrun --nproc_per_node=8 recipes/train.py --recipe cure_resnet18_cifar10 --set data.root=/data
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        --max-restarts=3 recipes/train.py --recipe cure_wrn34_10_cifar10 --output runs/wrn
    cure-zoo train --recipe cure_resnet18_w16_cifar10_5k --sweep cure.p=10,20,30 --sweep cure.alpha=0.2,0.5 \\
        --output runs/sensitivity        # Table 10: one run per value, runs/sensitivity/cure.p=10/..., a summary

Running the same command again in the same --output directory resumes from its checkpoint (this is also what
happens when torchrun restarts failed workers). SIGTERM or Ctrl-C (SIGINT) writes a checkpoint after the
current step and exits with status 143 or 130 (128 + the signal's number, the shell's convention); a second
Ctrl-C stops at once, keeping the previous checkpoint. Bad input or an I/O error: one line, status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

DESCRIPTION = "Train a cure_zoo model (ST, AT, TRADES, CURE, CURE-Eff) from a YAML recipe."
EPILOG = __doc__.split("\n\n", 1)[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", help="recipe name (e.g. cure_resnet18_cifar10; --list shows them) or a YAML path")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set cure.beta=5 --set preset=official (repeatable)",
    )
    parser.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="train once per value of KEY (the others as the recipe says) into OUTPUT/KEY=V, then write "
        "OUTPUT/sweep_summary.md and .json; repeatable, one key at a time (Table 10)",
    )
    parser.add_argument("--output", help="run directory, or the sweep's folder (default: runs/<recipe name>)")
    parser.add_argument("--list", action="store_true", help="list the available recipes and exit")
    parser.add_argument("--print", action="store_true", help="print the resolved recipe and exit")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model from a recipe",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Train (or list/print recipes). User errors are raised for the caller to print as one line."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from cure_zoo.distributed import shutdown_distributed
    from cure_zoo.errors import CureZooError
    from cure_zoo.training import RunInterrupted, available_recipes, load_recipe, train
    from cure_zoo.training.recipe import recipe_to_yaml

    if args.list:
        print("\n".join(available_recipes()))
        return 0
    if not args.recipe:
        raise CureZooError("--recipe is required (--list shows the recipes)")
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
    )
    try:
        if args.sweep:
            return _sweep(args, train)
        recipe = load_recipe(args.recipe, args.overrides)
        if args.print:
            print(recipe_to_yaml(recipe), end="")
            return 0
        _keep_cpu_memory(recipe)
        train(recipe, Path(args.output or Path("runs") / recipe.name))
    except RunInterrupted as stop:
        print(str(stop), file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the training loop: no checkpoint was written
        print("interrupted (Ctrl-C) before a checkpoint was written; the last one, if any, is kept", file=sys.stderr)
        return 130
    finally:
        shutdown_distributed()
    return 0


def _keep_cpu_memory(recipe) -> None:
    """A CPU run keeps freed memory in the process (cure_zoo.training.cpu_memory: about 15% of a CURE step at
    batch 128 otherwise goes to zero-filling fresh pages)."""
    from cure_zoo.distributed import resolve_device
    from cure_zoo.training.cpu_memory import keep_freed_memory

    if resolve_device(recipe.run.device).type == "cpu":
        keep_freed_memory()


def _sweep(args: argparse.Namespace, train) -> int:
    """``--sweep``: every run's recipe is built (and so checked) before the first one trains."""
    from cure_zoo.training.sweep import SUMMARY_MD, plan_sweep, run_sweep

    plan = plan_sweep(args.recipe, args.overrides, args.sweep)
    output = Path(args.output or Path("runs") / plan[0][1].name)
    if args.print:
        for point, _ in plan:
            print(f"{output / point.dirname}: {point.key} = {point.value!r}")
        return 0
    _keep_cpu_memory(plan[0][1])
    run_sweep(plan, output, train)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {output / SUMMARY_MD} ({len(plan)} runs)")
    return 0
