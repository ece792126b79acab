"""On glibc, a CPU training process keeps the memory a step frees: the next step's buffers need no fresh pages."""

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from cure_zoo.training.cpu_memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(10):  # a 64 MB buffer (above glibc's largest mmap threshold), touched and freed, ten times
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, sum(faults[-3:]))  # the heap settles after a few rounds
"""


def _probe(mode: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, check=True)
    kept, faults = done.stdout.split()
    return kept, int(faults)


@pytest.mark.slow  # two subprocesses
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    _, default_faults = _probe("default")
    kept, kept_faults = _probe("keep")
    assert kept == "True"
    assert default_faults > 30_000  # 64 MB = 16,384 pages, zero-filled again on every allocation
    assert kept_faults < 1_000  # the freed 64 MB come back from the heap
