"""RNG states in training checkpoints: a run resumes with fewer visible GPUs per process than it was saved with."""

from __future__ import annotations

import random

import numpy as np
import torch

from cure_zoo.training.checkpoint import capture_rng_state, restore_rng_state


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_restore_with_more_saved_cuda_states_than_visible_devices():
    state = capture_rng_state()
    expected = _draws()
    # a checkpoint written by a process that saw 8 GPUs (CUDA generator states are 16-byte seed+offset tensors);
    # on this machine there are fewer (none on a CPU-only one), and the restore must not index past them
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8) for _ in range(8)]
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    _draws()  # move every generator on
    assert restore_rng_state(state) == min(8, visible)
    assert _draws() == expected  # Python, NumPy and torch CPU generators are back where they were saved


def test_restore_without_cuda_states():
    state = capture_rng_state()
    state.pop("cuda", None)
    expected = _draws()
    assert restore_rng_state(state) == 0
    assert _draws() == expected
