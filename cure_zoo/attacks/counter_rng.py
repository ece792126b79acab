"""A counter-based random number generator: uniform numbers as a pure function of (seed, image index, element).

Attack random starts drawn from a stateful generator depend on how images are batched and sharded (image
``i`` gets whatever numbers the generator has reached). Hashing the counter ``(seed, official image index,
element)`` instead gives every image the same start however the images are split, on any device, with a few
vectorised integer operations (no per-sample loop).

The hash is Chris Wellons' ``lowbias32`` (a bijective 32-bit integer mixer), chained over the three keys.
All arithmetic runs in int64 on values below 2**48, so it is exact and identical on CPU and CUDA.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_MASK16 = 0xFFFF


def _mul32(a: torch.Tensor, c: int) -> torch.Tensor:
    """``a * c mod 2**32`` for ``0 <= a < 2**32`` without int64 overflow (split ``c`` into 16-bit halves)."""
    lo = a * (c & _MASK16)
    hi = ((a * (c >> 16)) & _MASK16) << 16
    return (lo + hi) & _MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """``lowbias32``: a bijection on 32-bit integers with good avalanche (int64 tensor in, int64 out)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def counter_uniform(
    seed: int, indices: torch.Tensor, shape: tuple[int, ...], device: torch.device | str | None = None
) -> torch.Tensor:
    """Uniform float32 numbers in [0, 1), shape ``[len(indices), *shape]``; entry ``[i, e]`` depends only on
    ``(seed, indices[i], e)`` (``e`` the flat element index). 24 random bits each (exact in float32)."""
    device = torch.device(device) if device is not None else indices.device
    key = hash32(torch.tensor(seed & _MASK32, dtype=torch.int64, device=device) ^ 0x9E3779B9)
    per_image = hash32(indices.to(device=device, dtype=torch.int64) + key)
    numel = 1
    for s in shape:
        numel *= s
    element = torch.arange(numel, dtype=torch.int64, device=device)
    bits = hash32(per_image[:, None] ^ hash32(element + 0x85EBCA6B)[None, :])
    return ((bits >> 8).to(torch.float32) * (1.0 / (1 << 24))).reshape(len(indices), *shape)
