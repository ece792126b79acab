"""``cure-zoo card``: write a run's model card (README.md, figures, claims), or the zoo's registry cards."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "card",
        help="write the model card of a run directory (or of every registered model)",
        description="From a run's config.json, metrics.jsonl and evaluation JSON, write README.md (the Hub model "
        "card), figures/*.png, eval.json, and the machine-readable claims into config.json (cure_zoo.claims) that "
        "'cure-zoo verify' re-measures. With --all-registered, regenerate the card of every registered CURE model "
        "and every baseline with a recipe (model_cards/).",
    )
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a finished training run directory")
    p.add_argument("--eval", metavar="PATH", help="evaluation JSON from 'cure-zoo eval' (default RUN_DIR/eval.json)")
    p.add_argument("--repo", metavar="ORG/NAME", help="the Hub repo the card is for (used in its usage snippet)")
    p.add_argument("--all-registered", action="store_true", help="write the registry's cards instead of a run's")
    p.add_argument("--output", default="model_cards", metavar="DIR", help="folder for --all-registered cards")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cure_zoo.errors import CureZooError

    if args.all_registered == bool(args.run_dir):
        raise CureZooError("give either RUN_DIR or --all-registered (not both, not neither)")
    if args.all_registered:
        from cure_zoo.hub.registry_cards import write_registered_cards

        written = write_registered_cards(args.output)
        print(f"wrote {len(written)} cards under {args.output}/")
        return 0
    from cure_zoo.hub.card_builder import card_for_run

    readme = card_for_run(args.run_dir, args.eval, args.repo)
    print(f"wrote {readme} (claims in config.json, evaluation in eval.json, figures/)")
    return 0
