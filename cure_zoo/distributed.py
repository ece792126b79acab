"""``torch.distributed`` for the whole package: joining the process group that ``torchrun`` describes,
choosing each process's device, and the few collectives training (data parallel) and evaluation (sharded
images) use. Without an initialised process group every collective is a no-op for one process.

torchrun's environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` or
a rendezvous) are all it takes, so single-node, multi-node and ``--max-restarts`` runs work the torchrun way:
NCCL on GPUs, gloo on the CPU.

Training does not wrap the model in ``DistributedDataParallel``: CURE needs the all-reduced gradients of two
extra objectives (CE on clean and on adversarial inputs, taken with ``torch.autograd.grad``), which DDP's
accumulate-grad hooks never see. Every method instead scales its local loss by the process's share of the
global batch and the gradients are summed with one bucketed :func:`all_reduce_sum_` per gradient set. All
processes then hold the same averaged gradient, take the same optimizer step and stay identical; BatchNorm
buffers are broadcast from rank 0 after each step (:func:`broadcast_module_`, what DDP's
``broadcast_buffers`` does).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from .errors import CureZooError

T = TypeVar("T")

_BUCKET_BYTES = 64 << 20


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
    world_size, rank, local_rank = (_env_int(v, d) for v, d in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)))
    device = resolve_device(device_spec)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    info = DistInfo(rank, world_size, local_rank)
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        store = _rendezvous(rank, world_size)
        dist.init_process_group(
            backend=backend, timeout=PROCESS_GROUP_TIMEOUT, store=store, rank=rank, world_size=world_size, **kwargs
        )
    return info, device


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name) or str(default)
    try:
        return int(text)
    except ValueError:
        raise CureZooError(f"{name}={text!r} is not an integer; {_LEFTOVER_HINT}") from None


PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)  # a collective that waits longer than this is a hang
RENDEZVOUS_TIMEOUT_ENV = "CURE_ZOO_RENDEZVOUS_TIMEOUT"
DEFAULT_RENDEZVOUS_TIMEOUT_S = 300.0
_LEFTOVER_HINT = (
    "if you did not mean to run distributed, unset WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT "
    "(left over from torchrun?); otherwise start every process with torchrun"
)


def _rendezvous(rank: int, world_size: int) -> dist.Store:
    """The store all ``world_size`` processes have joined, or one clear error.

    torch's own ``env://`` rendezvous waits (30 minutes, deaf to Ctrl-C inside its C++ wait) for processes
    that may never come: a shell with torchrun's variables left in it has ``WORLD_SIZE=2`` and nobody else.
    Here every process says what it waits for, waits at most ``$CURE_ZOO_RENDEZVOUS_TIMEOUT`` seconds
    (default 300), and polls in short steps, so Ctrl-C works."""
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise CureZooError(
            f"WORLD_SIZE={world_size} asks for {world_size} processes, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set, so they cannot meet; {_LEFTOVER_HINT}"
        )
    if not 0 <= rank < world_size:
        raise CureZooError(f"RANK={rank} is outside WORLD_SIZE={world_size}; {_LEFTOVER_HINT}")
    host, port_text = os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]
    try:
        port = int(port_text)
        limit = float(os.environ.get(RENDEZVOUS_TIMEOUT_ENV, DEFAULT_RENDEZVOUS_TIMEOUT_S))
    except ValueError:
        raise CureZooError(
            f"MASTER_PORT={port_text!r} or {RENDEZVOUS_TIMEOUT_ENV} is not a number; {_LEFTOVER_HINT}"
        ) from None
    print(
        f"cure_zoo: rank {rank} waiting up to {limit:g} s for {world_size - 1} more process"
        f"{'es' if world_size > 2 else ''} (WORLD_SIZE={world_size}) at {host}:{port}",
        file=sys.stderr,
        flush=True,
    )
    deadline = time.monotonic() + limit
    store = _torchrun_attempt_store(world_size, deadline)
    if store is None:  # no torchrun agent store: rank 0 hosts one, as env:// would
        store = _connect(
            lambda t: dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=t, wait_for_workers=False),
            deadline,
            f"{host}:{port}",
        )
    store.add(_JOINED_KEY, 1)
    while (joined := store.add(_JOINED_KEY, 0)) < world_size:
        if time.monotonic() > deadline:
            raise CureZooError(
                f"no other process joined within {limit:g} s: {joined} of WORLD_SIZE={world_size} at {host}:{port} "
                f"(raise {RENDEZVOUS_TIMEOUT_ENV} for slow starts); {_LEFTOVER_HINT}"
            )
        time.sleep(0.05)
    return store


_JOINED_KEY = "cure_zoo/rendezvous/joined"


def _connect(make: Callable[[timedelta], dist.Store], deadline: float, where: str) -> dist.Store:
    """``make(timeout)`` retried in short attempts until ``deadline`` (each attempt is a C++ wait that Ctrl-C
    cannot interrupt, so each is kept short); the store then gets the process group's timeout."""
    while True:
        step = min(2.0, max(0.1, deadline - time.monotonic()))
        try:
            store = make(timedelta(seconds=step))
        except (RuntimeError, OSError) as err:  # DistStoreError / DistNetworkError: not there (yet)
            if time.monotonic() >= deadline:
                reason = " ".join(str(err).split())[:160]
                raise CureZooError(
                    f"cannot reach or host the rendezvous at {where} ({reason}); {_LEFTOVER_HINT}"
                ) from None
            time.sleep(0.1)
            continue
        store.set_timeout(PROCESS_GROUP_TIMEOUT)
        return store


def _torchrun_attempt_store(world_size: int, deadline: float) -> dist.Store | None:
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
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    agent = _connect(
        lambda t: dist.TCPStore(host, port, world_size, is_master=False, timeout=t), deadline, f"{host}:{port}"
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"cure_zoo/attempt_{attempt}", agent)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_zero_first(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0 while the other processes wait, then on the others: for a download, rank 0 fetches
    the files and the others find them in place (torchvision checks them and skips its download), so no two
    processes write, or clean up after a failure, the same file. A failure on rank 0 is re-raised there and
    raised on every other rank as :class:`RankZeroFailed` naming it, so all ranks take the same path. Outside a
    process group it is just ``fn()``. (Several nodes without a shared filesystem: rank 0's node only.)"""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return fn()
    outcome: list[str | None] = [None]
    if dist.get_rank() == 0:
        try:
            result = fn()
        except BaseException as err:
            outcome[0] = f"{type(err).__name__}: {str(err).partition(chr(10))[0][:200]}"
            dist.broadcast_object_list(outcome, src=0)
            raise
        dist.broadcast_object_list(outcome, src=0)
        return result
    dist.broadcast_object_list(outcome, src=0)
    if outcome[0] is not None:
        raise RankZeroFailed(f"rank 0 failed first ({outcome[0]}); its own message says what to do")
    return fn()


class RankZeroFailed(CureZooError, RuntimeError):
    """What the other ranks raise when ``rank_zero_first``'s function failed on rank 0."""


# ---------------------------------------------------------------------------------------------------------
# collectives (no-ops for one process)


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised default process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list without a process group); gloo and NCCL."""
    _, world_size = world()
    if world_size == 1:
        return [obj]
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum_(tensors: list[torch.Tensor]) -> None:
    """Sum ``tensors`` over all processes, in place, in buckets of flattened tensors (one call per bucket)."""
    if world()[1] == 1 or not tensors:
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
    if world()[1] == 1 or not tensors:
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
    if world()[1] > 1:
        dist.barrier()
