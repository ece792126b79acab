"""Training checkpoints: everything needed to continue a run exactly where it stopped.

``checkpoint.pt`` in the run directory holds the recipe and :meth:`TrainState.state_dict`: the model, the method's
state (the revision model), the optimizer, the LR scheduler, the position (completed epochs, step within the
epoch, global step), the epoch's running loss sums and gradient statistics, the best-so-far record, the training
time and the RNG states of every process. :class:`TrainState` is the one list of what it holds. It is written
atomically (:func:`cure_zoo.io.save_torch_atomic`)
after every epoch, every ``checkpoint.every_steps`` steps and on SIGTERM, by rank 0; a run started again in the
same directory loads it (``torch.load(weights_only=True)``) and continues. Batches, crops, flips and attack starts
are functions of (seed, epoch, step), so a resumed run computes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import random
import signal
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import CureZooError
from ..io import save_torch_atomic

FORMAT = "cure_zoo.train_checkpoint/1"

_RUN_ONLY = {"saved": False}  # TrainState fields that live for one run and are never checkpointed
_IF_ANY = {"if_any": True}  # saved only when non-empty; a checkpoint without it restores the empty default


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class TrainState:
    """A training run's state: the parts with state of their own (``components``: model, method, optimizer,
    LR scheduler, each saved under its name) and the bookkeeping. ``state_dict()`` is the checkpoint's content
    (:func:`save_checkpoint` adds the recipe and the format tag) and ``load_state_dict()`` restores it; the
    fields marked run-only (the metrics read back from ``metrics.jsonl``, the stop request) are not saved.

    The layout is flat, one key per component and per field, as checkpoints have always been written."""

    components: dict[str, Stateful] = field(default_factory=dict, repr=False, compare=False, metadata=_RUN_ONLY)
    epochs_done: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    epoch_sums: dict[str, float] = field(default_factory=dict)  # this epoch's per-step loss sums so far
    epoch_count: int = 0  # the steps in those sums
    best: dict[str, Any] = field(default_factory=dict)  # the best epoch's check so far (empty: none yet)
    train_time: float = 0.0  # seconds spent in training steps, over all sessions of the run
    rng: list[dict[str, Any]] = field(default_factory=list)  # every process's RNG state at the last save
    grad_stats: list[dict[str, Any]] = field(default_factory=list, metadata=_IF_ANY)  # this epoch's records
    metrics: list[dict[str, Any]] = field(default_factory=list, metadata=_RUN_ONLY)  # one record per epoch done
    stop_requested: bool = field(default=False, metadata=_RUN_ONLY)  # SIGTERM/SIGINT: stop after this step
    stop_signal: int = field(default=signal.SIGTERM, metadata=_RUN_ONLY)

    def state_dict(self) -> dict[str, Any]:
        out = {name: part.state_dict() for name, part in self.components.items()}
        for f in _saved_fields():
            value = getattr(self, f.name)
            if value or not f.metadata.get("if_any"):
                out[f.name] = value
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned. A missing entry raises KeyError (a damaged checkpoint);
        the RNG states are only read here (:func:`restore_rng_state` puts a process's own back)."""
        for name, part in self.components.items():
            part.load_state_dict(state[name])
        for f in _saved_fields():
            if f.metadata.get("if_any"):
                setattr(self, f.name, list(state.get(f.name, [])))
            else:
                setattr(self, f.name, state[f.name])

    def next_epoch(self, epochs_done: int) -> None:
        """``epochs_done`` epochs are complete: the position moves to the start of the next one."""
        self.epochs_done, self.step_in_epoch = epochs_done, 0
        self.epoch_sums, self.epoch_count = {}, 0
        self.grad_stats = []


def _saved_fields():
    return [f for f in fields(TrainState) if f.metadata.get("saved", True)]


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
