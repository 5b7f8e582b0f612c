"""The process's memory: its peak as the operating system counts it, and glibc's heap.

Training on a CPU allocates tensors of a new shape at almost every step (batches of different
lengths). glibc's ``malloc`` serves blocks under its *mmap threshold* from heaps it rarely gives
back, and by default it raises that threshold (up to 32 MB) each time a larger block is freed, so
after a few hundred steps nearly every activation lives in heaps fragmented by the shapes before
it: the main run's training process grew from 1.2 to 5.9 GB in its first epoch and stayed there,
for a working set of a few hundred MB. A fixed threshold of 1 MB sends every large tensor to its
own ``mmap``, returned to the system when freed: 1.4 GB instead of 5.7, for training 5-12% slower
(each mapping's pages are faulted in again; docs/scaling.md has the trade-off).
``mallopt`` is glibc's documented knob for this (the ``MALLOC_MMAP_THRESHOLD_`` environment
variable sets it too, but only before the process starts); other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource
import sys

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (MiB).

    ``ru_maxrss`` is in kilobytes on Linux and in bytes on macOS.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def set_mmap_threshold(megabytes: float) -> bool:
    """Give every heap block of at least ``megabytes`` its own mapping (glibc); True if set.

    Setting it also turns off glibc's dynamic threshold, which is what lets the heaps grow.
    A C library without ``mallopt`` (macOS, musl) is left as it is: False.
    """
    if not megabytes > 0:
        raise ValueError(f"the mmap threshold must be positive, got {megabytes} MB")
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        logger.debug("No mallopt in this C library: the allocator is left as it is")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(megabytes * 2**20)))
