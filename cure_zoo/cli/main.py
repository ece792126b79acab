"""``cure-zoo``: list, train, evaluate, verify and publish the zoo's models.

Each subcommand lives in ``cmd_<name>.py`` with ``add_parser(subparsers)``; the parser's ``run`` default
returns the exit code. Heavy imports (torch, timm) happen inside ``run`` so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 1 a claim does not hold (verify), 2 a usage, input or I/O error
    (one line on stderr, from :func:`cure_zoo.errors.user_error_message`), 130 interrupted (Ctrl-C)."""
    from ..errors import user_error_message

    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"cure-zoo {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise
        print(f"cure-zoo {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
