"""``cure-zoo``: list, train, evaluate, verify and publish the zoo's models.

Each subcommand lives in ``cmd_<name>.py`` with ``add_parser(subparsers)``; the parser's ``run`` default
returns the exit code. Heavy imports (torch, timm) happen inside ``run`` so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

# Subcommands, in the order ``--help`` shows them.
COMMANDS = ["list", "train", "eval", "card", "push", "verify", "analyze"]


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage mistakes (unknown option, bad choice, missing argument) as one line, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="cure-zoo",
        description="A timm model zoo of adversarially robust classifiers trained with CURE (ICLR 2024).",
        epilog="Run 'cure-zoo COMMAND --help' for a command's options.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"cure-zoo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.cmd_{name}").add_parser(subparsers)
    return parser


def run_command(run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace, name: str | None) -> int:
    """``run(args)``'s exit status, with the command line's error handling (``cure-zoo`` and
    ``recipes/train.py`` alike): an error a user can fix (:func:`cure_zoo.errors.user_error_message`: a
    ``CureZooError`` or an ``OSError``) is one line on stderr, ``NAME: error: MESSAGE`` (``error: MESSAGE``
    when ``name`` is None), and status 2; Ctrl-C is ``NAME: interrupted`` and 130. Anything else is a bug in
    cure_zoo and keeps its traceback."""
    from ..errors import user_error_message

    prefix = f"{name}: " if name else ""
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print(f"{prefix}interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise
        print(f"{prefix}error: {message}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 1 a claim does not hold (verify), 2 a usage, input or I/O error
    (one line on stderr, see :func:`run_command`), 130 interrupted (Ctrl-C)."""
    args = build_parser().parse_args(argv)
    return run_command(args.run, args, f"cure-zoo {args.command}")


if __name__ == "__main__":
    sys.exit(main())
