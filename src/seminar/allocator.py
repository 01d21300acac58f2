"""Keep freed memory in the process for the next step instead of returning it to the system.

Eager PyTorch allocates and frees tensors of tens of megabytes at every training step (the GSU's
[B, C, L] scores at long windows, their gradients). glibc serves each such block with a fresh
``mmap`` and unmaps it on free, so every step page-faults its whole working set again: at L = 10^4
that was 40% of a training epoch's time, spent in the kernel. Serving every allocation from the
heap and never trimming it makes a freed block the next step's block. The cost is that the
process's resident memory stays at its peak; ``SEMINAR_SYSTEM_MALLOC=1`` keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["OPT_OUT_VARIABLE", "retain_freed_memory"]

OPT_OUT_VARIABLE = "SEMINAR_SYSTEM_MALLOC"

# mallopt(3) parameters of glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # the largest value mallopt's int takes: 2 GiB of free heap top before trimming


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to keep large freed blocks for reuse; True if it was told.

    A no-op (False) off Linux, on a C library without ``mallopt`` (musl), or when the
    ``SEMINAR_SYSTEM_MALLOC`` environment variable is set to anything but empty or 0.
    """
    if os.environ.get(OPT_OUT_VARIABLE, "") not in ("", "0") or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    no_mmap = mallopt(_M_MMAP_MAX, 0) == 1
    no_trim = mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) == 1
    return no_mmap and no_trim
