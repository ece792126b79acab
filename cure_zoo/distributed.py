"""Joining the process group that ``torchrun`` describes, and choosing each process's device: shared by
training (data parallel) and evaluation (sharded images).

torchrun's environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` or
a rendezvous) are all it takes, so single-node, multi-node and ``--max-restarts`` runs work the torchrun way:
NCCL on GPUs, gloo on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import CureZooError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> this process's GPU (``LOCAL_RANK`` under torchrun) if there is one, else the CPU."""
    text = str(device)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text not in ("cpu", "cuda") and not text.startswith("cuda:"):
        raise CureZooError(f"unknown device {text!r}; use auto, cpu, cuda or cuda:N")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CureZooError(f"device {text!r} was asked for but no CUDA GPU is available; use cpu (or auto)")
        if text == "cuda":
            text = f"cuda:{int(os.environ.get('LOCAL_RANK', torch.cuda.current_device()))}"
    return torch.device(text)


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


def init_distributed(device_spec: str) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec)
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
