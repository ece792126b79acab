"""Splitting an evaluation across ``torchrun`` processes: contiguous slices, per-sample masks gathered back.

Every rank evaluates ``images[start:stop]`` of the same image list; masks are gathered (in rank order, so in
image order) with ``all_gather_object``, which works with gloo and NCCL, and every rank ends with the full
result (rank 0 writes it). Without an initialised process group everything is a no-op for one process.
"""

from __future__ import annotations

import torch

from ..distributed import all_gather_object


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous slice ``[start, stop)`` of ``n`` items that ``rank`` evaluates (sizes differ by <= 1)."""
    return rank * n // world_size, (rank + 1) * n // world_size


def gather_masks(masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Concatenate each rank's per-sample masks (CPU bool tensors) in rank order."""
    parts = all_gather_object({k: v.cpu().numpy() for k, v in masks.items()})
    return {k: torch.cat([torch.from_numpy(p[k]) for p in parts]) for k in masks}
