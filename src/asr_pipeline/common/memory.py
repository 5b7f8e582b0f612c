"""The process's memory: its peak as the operating system counts it, glibc's heap and Arrow's pool.

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
import functools
import gc
import logging
import os
import resource
import sys
from typing import Any

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h


@functools.cache
def _libc_function(name: str, *argtypes: type) -> Any:
    """The C library's function ``name`` returning an int, or None where the library has no
    such function (glibc's allocator knobs are absent from macOS's and musl's)."""
    library = ctypes.util.find_library("c")
    try:
        function = getattr(ctypes.CDLL(library), name) if library else None
    except (OSError, AttributeError):
        return None
    if function is not None:
        function.argtypes, function.restype = list(argtypes), ctypes.c_int
    return function


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
    mallopt = _libc_function("mallopt", ctypes.c_int, ctypes.c_int)
    if mallopt is None:
        logger.debug("No mallopt in this C library: the allocator is left as it is")
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, int(megabytes * 2**20)))


ONEDNN_CACHE_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


def limit_onednn_primitive_cache(capacity: int) -> bool:
    """Keep at most ``capacity`` compiled oneDNN kernels (PyTorch's CPU convolutions); True if set.

    oneDNN compiles a kernel ("primitive") for each input shape and caches up to 1,024 of them.
    Training batches have a new shape at nearly every step, so the cache fills with kernels that
    are never used again (~100 MB by the end of an epoch, docs/scaling.md) and compiling afresh
    costs little against a step. oneDNN reads its one setting, the environment variable
    ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, when the process compiles its first kernel (PyTorch
    does not export oneDNN's ``dnnl_set_primitive_cache_capacity``): this sets it for a process
    that has run no CPU convolution yet, and leaves an explicit setting of the variable alone
    (False).
    """
    if type(capacity) is not int or capacity < 0:
        raise ValueError(f"the oneDNN primitive cache holds 0 or more kernels, got {capacity!r}")
    if ONEDNN_CACHE_VARIABLE in os.environ:
        return False
    os.environ[ONEDNN_CACHE_VARIABLE] = str(capacity)
    return True


def keep_triton_out_without_gpu() -> bool:
    """Make ``import triton`` fail in a process without a CUDA GPU; True if it now does.

    Every ``torch.optim`` optimizer imports ``torch._dynamo``, and ``torch._dynamo`` imports
    Triton whenever it is installed (PyTorch's CUDA wheel depends on it) only to recognise
    Triton's types. Loading it maps its 500 MB ``libtriton.so``, ~76 MB of which stays resident,
    and without a GPU nothing can use it: Triton compiles GPU kernels, and ``torch.compile`` emits
    C++ on a CPU. A ``None`` in ``sys.modules`` is Python's documented way to make an import raise
    ``ImportError``, which PyTorch reads as "Triton is not installed". A process with a GPU, or
    one that has imported Triton already, is left as it is (False).
    """
    if "triton" in sys.modules:
        return False
    import torch

    if torch.cuda.is_available():
        return False
    sys.modules["triton"] = None
    return True


def configure_memory(
    mmap_threshold_mb: float | None,
    onednn_cache: int | None,
    load_triton_without_gpu: bool | None,
) -> None:
    """Training's memory settings (each None: left as it is): :func:`set_mmap_threshold`,
    :func:`limit_onednn_primitive_cache`, and :func:`keep_triton_out_without_gpu` when
    ``load_triton_without_gpu`` is False."""
    if mmap_threshold_mb is not None:
        set_mmap_threshold(mmap_threshold_mb)
    if onednn_cache is not None:
        limit_onednn_primitive_cache(onednn_cache)
    if not isinstance(load_triton_without_gpu, bool | None):
        raise ValueError(f"expected true, false or null, got {load_triton_without_gpu!r}")
    if load_triton_without_gpu is False:
        keep_triton_out_without_gpu()


def current_rss_mb() -> float | None:
    """Resident set size of this process now, in MB (Linux's ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def trim_heaps() -> bool:
    """Hand glibc's free heap pages back to the system (``malloc_trim(0)``); True if it trimmed
    something, False elsewhere (other C libraries)."""
    malloc_trim = _libc_function("malloc_trim", ctypes.c_size_t)
    return bool(malloc_trim(0)) if malloc_trim is not None else False


def release_arrow_memory() -> bool:
    """Hand the free memory of Arrow's default pool back to the system; True if Arrow is loaded.

    pandas reads Parquet through Arrow and keeps string columns in Arrow buffers, which Arrow
    allocates from its own pool (mimalloc or jemalloc) unless ``ARROW_DEFAULT_MEMORY_POOL`` is
    ``system`` (``malloc``; the pipelines' default, set in ``settings.py``). Arrow's own pools
    keep freed pages resident for reuse: building and dropping a table of wordfreq's 321,180
    English words left 70 MB resident in mimalloc while Arrow counted 4 MB allocated.
    ``release_unused`` is Arrow's call for giving them back. A process that never imported
    pyarrow has no pool to release, and this does not import it (False).
    """
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is None:
        return False
    pyarrow.default_memory_pool().release_unused()
    return True


def release_free_memory() -> bool:
    """Collect Python's garbage and hand the allocators' free pages back to the system.

    Memory a finished step freed stays in the process: glibc keeps freed heap blocks for later
    ``malloc`` calls and returns only the top of a heap by itself, and Arrow's pool keeps what
    it freed (:func:`release_arrow_memory`). Between the pipeline's nodes (each needs its own
    working set, then hands on a small result) ``malloc_trim(0)`` gives back every whole free
    page of every heap, so the next node starts from what is still in use, not from the largest
    node so far. True if glibc trimmed something; False elsewhere.
    """
    gc.collect()
    release_arrow_memory()
    return trim_heaps()
