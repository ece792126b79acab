#!/usr/bin/env python
"""Train a cure_zoo model from a recipe.

    python recipes/train.py --recipe smoke_cure_cifar10 --output runs/smoke
    torchrun --nproc_per_node=8 recipes/train.py --recipe cure_resnet18_cifar10 --set data.root=/data
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \
        --max-restarts=3 recipes/train.py --recipe cure_wrn34_10_cifar10 --output runs/wrn

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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from cure_zoo.cli.main import OneLineErrorParser

    parser = OneLineErrorParser(
        prog="recipes/train.py",
        description="Train a cure_zoo model (ST, AT, TRADES, CURE, CURE-Eff) from a YAML recipe.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--recipe", help="recipe name in recipes/ (e.g. cure_resnet18_cifar10) or a YAML path")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set cure.beta=5 --set preset=official (repeatable)",
    )
    parser.add_argument("--output", help="run directory (default: runs/<recipe name>)")
    parser.add_argument("--list", action="store_true", help="list the available recipes and exit")
    parser.add_argument("--print", action="store_true", help="print the resolved recipe and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    args = parse_args(argv)
    from cure_zoo.errors import user_error_message
    from cure_zoo.training import RunInterrupted, available_recipes, load_recipe, train
    from cure_zoo.training.recipe import recipe_to_yaml

    if args.list:
        print("\n".join(available_recipes()))
        return 0
    if not args.recipe:
        print("error: --recipe is required (--list shows the recipes)", file=sys.stderr)
        return 2
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
    )
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        if args.print:
            print(recipe_to_yaml(recipe), end="")
            return 0
        output = Path(args.output or Path("runs") / recipe.name)
        train(recipe, output)
    except RunInterrupted as stop:
        print(str(stop), file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the training loop: no checkpoint was written
        print("interrupted (Ctrl-C) before a checkpoint was written; the last one, if any, is kept", file=sys.stderr)
        return 130
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        from cure_zoo.training.distributed import shutdown_distributed

        shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
