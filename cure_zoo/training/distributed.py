"""Data-parallel training over ``torch.distributed`` (NCCL on GPU, gloo on CPU), set up from torchrun's
environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` or a
rendezvous), so single-node, multi-node and ``--max-restarts`` all work the torchrun way.

The model is not wrapped in ``DistributedDataParallel``: CURE needs the all-reduced gradients of two extra
objectives (CE on clean and on adversarial inputs, taken with ``torch.autograd.grad``), which DDP's
accumulate-grad hooks never see. Every method instead scales its local loss by the process's share of the
global batch and the gradients are summed with one bucketed ``all_reduce`` per gradient set. All processes
then hold the same averaged gradient, take the same optimizer step and stay identical; BatchNorm buffers are
broadcast from rank 0 after each step (what DDP's ``broadcast_buffers`` does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

_BUCKET_BYTES = 64 << 20


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        spec = f"cuda:{local_rank}"
    return torch.device(spec)


def init_distributed(device_spec: str) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    info = DistInfo(rank, world_size, local_rank)
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        timeout = timedelta(minutes=30)
        store = _torchrun_attempt_store(world_size, timeout)
        if store is not None:
            kwargs.update(store=store, rank=rank, world_size=world_size)
        dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
    return info, device


def _torchrun_attempt_store(world_size: int, timeout: timedelta) -> dist.Store | None:
    """torchrun's shared store, scoped to this restart attempt; None when torchrun does not share its store.

    Since torch 2.5 torchrun's workers use one TCPStore that the elastic agent keeps for its whole life
    (``TORCHELASTIC_USE_AGENT_STORE=True``), and the process group's keys (gloo's addresses, NCCL's unique id)
    are not scoped to a restart: after a ``--max-restarts`` restart the new workers read the dead workers'
    entries and fail to connect or hang (pytorch/pytorch#135712; seen with gloo on torch 2.15). A prefix per
    attempt, what torch did itself up to 2.4, keeps each worker group's keys apart. ``TORCHELASTIC_RESTART_COUNT``
    counts the restarts of this node's agent, so on several nodes it can disagree after a membership change;
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (a fresh store per rendezvous round) avoids the question there.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    agent = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False, timeout=timeout
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"cure_zoo/attempt_{attempt}", agent)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


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
