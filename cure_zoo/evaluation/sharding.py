"""Splitting an evaluation across ``torchrun`` processes: contiguous slices, per-sample masks gathered back.

Every rank evaluates ``images[start:stop]`` of the same image list; masks are gathered (in rank order, so in
image order) with ``all_gather_object``, which works with gloo and NCCL, and every rank ends with the full
result (rank 0 writes it). Without an initialised process group everything is a no-op for one process.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised default process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous slice ``[start, stop)`` of ``n`` items that ``rank`` evaluates (sizes differ by <= 1)."""
    return rank * n // world_size, (rank + 1) * n // world_size


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list without a process group)."""
    _, world_size = world()
    if world_size == 1:
        return [obj]
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def gather_masks(masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Concatenate each rank's per-sample masks (CPU bool tensors) in rank order."""
    parts = gather({k: v.cpu().numpy() for k, v in masks.items()})
    return {k: torch.cat([torch.from_numpy(p[k]) for p in parts]) for k in masks}
