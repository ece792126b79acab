"""Keep freed memory in the process on CPU (glibc's malloc), so that a training step does not pay for fresh pages.

glibc serves every allocation above its mmap threshold (at most 32 MB) with a new ``mmap`` and returns it to the
kernel on ``free``, and trims the heap's top whenever more than ``M_TRIM_THRESHOLD`` is free: each such buffer
is then zero-filled page by page, by the kernel, the next time it is touched. A CURE step at batch 128 on
ResNet-18 allocates gigabytes of activation gradients that way: measured here, the two RGP score passes took
0.83 M minor page faults and the loss's backward pass 0.42 M, and a CURE step cost 1.36-1.39x a TRADES step
with glibc's defaults against 1.12-1.27x (median 1.20, the floor being 1.24) with mmap off and no trimming
(``benchmarks/results/training_steps_b128*.md``, ``cure_backward_b128*.md``). CUDA has its own caching
allocator; this matters on the CPU only.

:func:`keep_freed_memory` is what ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...``
does, from inside the process: the memory a step frees is reused by the next one instead of being returned.
The process's resident set then stays at its peak (it reaches the peak in every step anyway). The training
command calls it for CPU runs; it does nothing off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

_logger = logging.getLogger(__name__)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's malloc.h


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory (no mmap'd chunks, no heap trimming); True when it agreed."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to change
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # M_TRIM_THRESHOLD takes an int here; the largest one is as good as never
    done = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if done:
        _logger.debug("glibc malloc: mmap off, no trimming (freed memory is reused by the next step)")
    return done
