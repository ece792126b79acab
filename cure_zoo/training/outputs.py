"""What a training run leaves in its directory (the contract the loader, ``cure-zoo card`` and ``push`` read).

* ``model.safetensors``: the training model theta at the last epoch (the paper's reported model);
* ``config.json``: timm's Hub config (written by timm's own ``save_config_for_hf``, so
  ``timm.create_model('hf-hub:...')`` and ``cure_zoo.models.loader.load_model(run_dir)`` can rebuild the
  model) plus the ``cure_zoo`` block: model name, method, dataset, weights sha256, the fully resolved recipe
  and preset, data, starting weights, training summary, code revision and library versions (:func:`provenance`);
* ``train_hparams.yaml``: the resolved recipe;
* ``metrics.jsonl``: one JSON object per epoch (rewritten atomically each epoch);
* ``model_best.safetensors``: the weights of the epoch with the best PGD-20 accuracy (robust overfitting);
  its sha256 is ``cure_zoo.training.best_eval.weights_sha256``.

The names, and the rule for what may leave the directory, are :mod:`cure_zoo.rundir`'s.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..io import atomic_write, save_weights, sha256_file, write_text_atomic
from ..rundir import CONFIG_BLOCK, CONFIG_FILE, HPARAMS_FILE, METRICS_FILE, WEIGHTS_FILE
from ..version import __version__, library_versions
from .checkpoint import TrainState
from .recipe import Recipe, preset_departures, recipe_to_yaml


def code_revision() -> str:
    """The git commit of the cure_zoo checkout this code runs from (``+dirty`` with uncommitted changes), or,
    for an installed package, ``cure-zoo==VERSION`` (git is asked only about a checkout of cure_zoo itself,
    never about a repository the package happens to be installed in)."""
    root = Path(__file__).resolve().parents[2]
    installed = f"cure-zoo=={__version__}"
    if not (root / ".git").exists() or not (root / "pyproject.toml").is_file():
        return installed
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return installed
    return f"{sha}+dirty" if dirty else sha or installed


def provenance(
    recipe: Recipe,
    state: TrainState,
    *,
    weights_sha256: str,
    init_sha256: str | None,
    train_source: str,
    train_examples: int,
    eval_source: str | None,
    steps_per_epoch: int,
    world_size: int,
    device: str,
) -> dict[str, Any]:
    """The ``cure_zoo`` block of a finished run's ``config.json``: what was trained (model, method, dataset,
    weights sha256, the resolved recipe and its departures from the preset, starting weights), on what data,
    the training summary (position, time, last and best check) and the code revision and library versions."""
    r = recipe
    last = next((m for m in reversed(state.metrics) if "eval" in m), None)
    summary: dict[str, Any] = {
        "epochs": state.epochs_done,
        "global_steps": state.global_step,
        "steps_per_epoch": steps_per_epoch,
        "world_size": world_size,
        "device": device,
        "train_time_s": round(state.train_time, 1),
        "last_eval": last["eval"] if last else None,
        "best_eval": state.best or None,
    }
    if last and state.best:
        key = state.best["metric"]
        summary["robust_overfitting_delta"] = round(last["eval"][key] - state.best["value"], 4)
    return {
        "model_name": r.model_name,
        "method": r.method,
        "dataset": r.data.dataset,
        "weights_sha256": weights_sha256,
        "recipe_name": r.name,
        "preset": r.preset,
        "preset_departures": preset_departures(r),
        "recipe": r.to_dict(),
        "init": {"spec": r.model.init, "sha256": init_sha256} if r.model.init else None,
        "data": {
            "train": train_source,
            "train_examples": train_examples,
            "augmentation": "RandomCrop(32, padding=4) + RandomHorizontalFlip" if r.data.augment else "none",
            "normalization": "none (inputs in [0, 1])",
            "eval": eval_source,
        },
        "training": summary,
        "code_revision": code_revision(),
        "versions": library_versions(),
    }


def write_hparams(output_dir: Path, recipe: Recipe) -> None:
    write_text_atomic(output_dir / HPARAMS_FILE, recipe_to_yaml(recipe))


def write_metrics(output_dir: Path, records: list[dict[str, Any]]) -> None:
    write_text_atomic(output_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in records))


def weights_metadata(recipe: Recipe) -> dict[str, str]:
    return {"format": "pt", "method": recipe.method, "recipe": recipe.name, "dataset": recipe.data.dataset}


def write_weights(path: Path, model: nn.Module, recipe: Recipe) -> str:
    save_weights(model.state_dict(), path, metadata=weights_metadata(recipe))
    return sha256_file(path)


def write_config(output_dir: Path, model: nn.Module, recipe: Recipe, block: dict[str, Any]) -> Path:
    """``config.json``: timm's export of ``model`` plus the ``cure_zoo`` block, written atomically."""
    from timm.models._hub import save_config_for_hf

    describe = f"{recipe.method.upper()} {recipe.model.architecture} trained on {recipe.data.dataset}"
    pretrained_cfg = {"description": describe + f" with cure_zoo recipe {recipe.name}"}

    def write(tmp: Path) -> None:
        save_config_for_hf(
            model, str(tmp), model_config={"pretrained_cfg": pretrained_cfg}, model_args=dict(recipe.model.args)
        )
        config = json.loads(tmp.read_text())
        config["pretrained_cfg"].pop("tag", None)  # the architecture's first zoo tag, not this run's
        config[CONFIG_BLOCK] = block
        tmp.write_text(json.dumps(config, indent=2) + "\n")

    return atomic_write(output_dir / CONFIG_FILE, write)


def final_paths(output_dir: Path) -> tuple[Path, Path]:
    return output_dir / WEIGHTS_FILE, output_dir / CONFIG_FILE
