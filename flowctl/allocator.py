"""Keep glibc from handing large freed blocks back to the kernel between tensor operations.

PyTorch's CPU tensors come from ``malloc``. glibc serves blocks above its mmap threshold (128 KiB
at start, raised by its own rule after frees, up to 32 MiB) with fresh ``mmap`` calls and gives
freed heap tops back to the kernel above its trim threshold, so a loop that allocates and frees
the same few-MiB temporaries can pay page faults for every one of them. How often depends on
what the process allocated before: flowctl's W2 sampling benchmark took 513 and 502 ms in two
processes and 378 ms in a third. :func:`tune_malloc` fixes both thresholds high (32 MiB and
256 MiB): the same W2 sampling then took 325 ms in a run where every library got the setting
alike (``benchmarks/flows.py --malloc tuned``, benchmarks/results/flows-20261201-054555.json).
The process keeps up to 256 MiB of freed heap.

The ``flowctl`` command calls it at start; the library does not (importing it changes nothing).
``FLOWCTL_MALLOC=default`` in the environment opts out; on a C library other than glibc it does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

MMAP_THRESHOLD = 32 << 20   # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD = -1      # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds; True if both were applied."""
    if os.environ.get("FLOWCTL_MALLOC", "").strip().lower() == "default":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
