#!/usr/bin/env python
"""Train a cure_zoo model from a recipe: the script form of ``cure-zoo train`` (same options, same code, in
``cure_zoo/cli/cmd_train.py``), kept for ``torchrun recipes/train.py``. See ``--help`` for examples."""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from cure_zoo.cli.cmd_train import DESCRIPTION, EPILOG, add_arguments
    from cure_zoo.cli.main import OneLineErrorParser

    parser = OneLineErrorParser(
        prog="recipes/train.py",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Exit status and one-line errors as ``cure-zoo train``'s (:func:`cure_zoo.cli.main.run_command`), the
    lines prefixed ``error:`` alone."""
    args = parse_args(argv)
    from cure_zoo.cli.cmd_train import run
    from cure_zoo.cli.main import run_command

    return run_command(run, args, None)


if __name__ == "__main__":
    sys.exit(main())
