"""``cure-zoo push RUN_DIR --repo ORG/NAME``: publish a run to the Hugging Face Hub in one commit."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "push",
        help="publish a run directory to the Hugging Face Hub (one commit)",
        description="Upload model.safetensors, config.json (with the claims), README.md (the card), eval.json, "
        "train_hparams.yaml and the card's figures in ONE commit. Refuses a run that lacks weights, config, "
        "evaluation or card, or whose card was made for other weights. The token comes from HF_TOKEN or the "
        "Hugging Face login and is never shown.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="training run directory (after 'cure-zoo card RUN_DIR')")
    p.add_argument("--repo", required=True, metavar="ORG/NAME", help="Hub model repository (created if missing)")
    p.add_argument("--revision", metavar="R", help="branch to commit to (created if missing; default main)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--dry-run", action="store_true", help="print the exact files, sizes and sha256; send nothing")
    p.add_argument("--message", metavar="TEXT", help="commit message")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cure_zoo.hub.push import push

    push(
        args.run_dir,
        args.repo,
        revision=args.revision,
        private=args.private,
        dry_run=args.dry_run,
        commit_message=args.message,
    )
    return 0
