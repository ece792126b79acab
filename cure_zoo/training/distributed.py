"""Data-parallel training over ``torch.distributed`` (NCCL on GPU, gloo on CPU), joined through
:func:`cure_zoo.distributed.init_distributed` (torchrun's environment: single-node, multi-node and
``--max-restarts`` all work the torchrun way).

The model is not wrapped in ``DistributedDataParallel``: CURE needs the all-reduced gradients of two extra
objectives (CE on clean and on adversarial inputs, taken with ``torch.autograd.grad``), which DDP's
accumulate-grad hooks never see. Every method instead scales its local loss by the process's share of the
global batch and the gradients are summed with one bucketed ``all_reduce`` per gradient set. All processes
then hold the same averaged gradient, take the same optimizer step and stay identical; BatchNorm buffers are
broadcast from rank 0 after each step (what DDP's ``broadcast_buffers`` does).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from ..distributed import (  # noqa: F401  (the trainer's API)
    DistInfo,
    init_distributed,
    rank_zero_first,
    shutdown_distributed,
)

_BUCKET_BYTES = 64 << 20


def all_reduce_sum_(tensors: list[torch.Tensor]) -> None:
    """Sum ``tensors`` over all processes, in place, in buckets of flattened tensors (one call per bucket)."""
    if not dist.is_initialized() or dist.get_world_size() == 1 or not tensors:
        return
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors + [None]:
        if t is not None:
            bucket.append(t)
            size += t.numel() * t.element_size()
        if bucket and (t is None or size >= _BUCKET_BYTES):
            flat = _flatten_dense_tensors(bucket)
            dist.all_reduce(flat)
            for dst, src in zip(bucket, _unflatten_dense_tensors(flat, bucket), strict=True):
                dst.copy_(src)
            bucket, size = [], 0


def broadcast_(tensors: list[torch.Tensor], src: int = 0) -> None:
    """Copy rank ``src``'s values of ``tensors`` to every process (buffers, initial weights)."""
    if not dist.is_initialized() or dist.get_world_size() == 1 or not tensors:
        return
    flat = _flatten_dense_tensors(tensors)
    dist.broadcast(flat, src)
    for dst, val in zip(tensors, _unflatten_dense_tensors(flat, tensors), strict=True):
        dst.copy_(val)


def broadcast_module_(module: torch.nn.Module, params: bool = True, buffers: bool = True) -> None:
    """Make every process's ``module`` equal to rank 0's (floating-point and integer tensors alike)."""
    tensors = ([p.data for p in module.parameters()] if params else []) + (
        [b for b in module.buffers()] if buffers else []
    )
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        broadcast_(group)


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj):
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
