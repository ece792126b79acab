"""The registry's model cards (``cure-zoo card --all-registered``, the committed ``model_cards/``): one card per
registered CURE model and per baseline with a recipe, from the zoo table (:mod:`cure_zoo.models.zoo`), the
recipe that trains it and the paper's numbers; a model published on the Hub quotes its published claims.
These models have no weights here, so nothing is measured; a run's card is :mod:`.card_builder`'s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import write_text_atomic
from ..models import param_count
from ..rundir import CARD_FILE
from .card_builder import arch_names
from .cards import CardData, render_card
from .paper_results import reported_for


def registered_recipes() -> dict[str, str]:
    """zoo model name -> the recipe (file stem in ``recipes/``) that trains it."""
    from ..models.zoo import RECIPE_ONLY_METHODS
    from ..training.recipe import RECIPES_DIR, available_recipes, load_recipe

    out: dict[str, str] = {}
    if not RECIPES_DIR.is_dir():
        return out
    for name in available_recipes():
        recipe = load_recipe(name)
        if recipe.model_name and recipe.method not in RECIPE_ONLY_METHODS:
            out.setdefault(recipe.model_name, name)
    return out


def card_for_entry(entry: Any, recipe_name: str | None) -> CardData:
    """The card of a registered model from the zoo table: published claims if any, else the paper's numbers."""
    short = entry.arch
    human = arch_names(entry.architecture)[1]
    recipe = preset = None
    departures: dict[str, Any] = {}
    if recipe_name:
        from ..training.recipe import load_recipe, preset_departures

        resolved = load_recipe(recipe_name)
        recipe, preset, departures = resolved.to_dict(), resolved.preset, preset_departures(resolved)
    return CardData(
        model_name=entry.name,
        method=entry.method,
        architecture=entry.architecture,
        arch_label=human,
        dataset=entry.dataset,
        license=entry.license,
        registered_name=entry.name,
        params=param_count(entry.architecture, entry.num_classes, {}),
        paper_rows=reported_for(entry.method, short, entry.dataset),
        recipe=recipe,
        recipe_name=recipe_name,
        preset=preset,
        preset_departures=departures,
        hub_repo=entry.repo_id if entry.published else None,
        published_revision=entry.revision if entry.published else None,
        published_claims=dict(entry.claims) if entry.published else {},
    )


def write_registered_cards(out_dir: str | Path) -> list[Path]:
    """``out_dir/<name>/README.md`` for every CURE model and every baseline that has a recipe, regenerated;
    cards of models no longer in that set are removed."""
    from ..models.zoo import ZOO

    out_dir = Path(out_dir)
    recipes = registered_recipes()
    written = []
    for entry in ZOO:
        if entry.weights_source != "hub" or not (entry.method == "cure" or entry.name in recipes):
            continue
        card = card_for_entry(entry, recipes.get(entry.name))
        written.append(write_text_atomic(out_dir / entry.name / CARD_FILE, render_card(card)))
    keep = {p.parent.name for p in written}
    for old in out_dir.glob("*/" + CARD_FILE):
        if old.parent.name not in keep:
            old.unlink()
            if not any(old.parent.iterdir()):
                old.parent.rmdir()
    return written
