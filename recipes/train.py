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
    args = parse_args(argv)
    from cure_zoo.cli.cmd_train import run
    from cure_zoo.errors import user_error_message

    try:
        return run(args)
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
