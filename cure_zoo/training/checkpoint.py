"""Training checkpoints: everything needed to continue a run exactly where it stopped.

``checkpoint.pt`` in the run directory holds the model, the method's state (the revision model), the
optimizer, the LR scheduler, the position (completed epochs, step within the epoch, global step), the
best-so-far record and the RNG states of every process. It is written atomically (:func:`cure_zoo.io.save_torch_atomic`)
after every epoch, every ``checkpoint.every_steps`` steps and on SIGTERM, by rank 0; a run started again in the
same directory loads it (``torch.load(weights_only=True)``) and continues. Batches, crops, flips and attack starts
are functions of (seed, epoch, step), so a resumed run computes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CureZooError
from ..io import save_torch_atomic

FORMAT = "cure_zoo.train_checkpoint/1"


def capture_rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch CPU and CUDA generator states (tensors and plain values only)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> int:
    """Restore what :func:`capture_rng_state` saved. CUDA generators are restored for the saved devices that
    are visible now (a run may resume with fewer GPUs per process than it was saved with; the trainer's own
    draws all come from seeded generators, so only a model's own randomness, e.g. dropout, uses them).
    Returns the number of CUDA generator states restored."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cuda_states = state.get("cuda", [])[:visible]
    for device, cuda_state in enumerate(cuda_states):
        torch.cuda.set_rng_state(cuda_state, device)
    return len(cuda_states)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    save_torch_atomic(dict(payload, format=FORMAT), path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and what to do
        raise CureZooError(
            f"cannot read the training checkpoint {path} ({type(err).__name__}: {' '.join(str(err).split())[:200]}); "
            f"{_START_AFRESH}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CureZooError(f"{path} is not a cure_zoo training checkpoint ({FORMAT}); use another --output directory")
    if not isinstance(ckpt.get("recipe"), dict):
        raise CureZooError(f"{path} is a damaged training checkpoint (no recipe); {_START_AFRESH}")
    return ckpt


_START_AFRESH = "delete it to start the run afresh, or train into another --output directory"


def checkpoint_mismatch(path: Path, err: Exception) -> CureZooError:
    """The error for a checkpoint that was read but cannot be restored (missing entries, wrong shapes)."""
    reason = f"missing {err}" if isinstance(err, KeyError) else " ".join(str(err).split())[:200]
    return CureZooError(f"the training checkpoint {path} does not fit this run ({reason}); {_START_AFRESH}")
