"""glibc's mmap threshold (asr_pipeline.common.memory): what keeps training's heaps from growing.

Each case runs in a fresh interpreter, so the allocator starts from its defaults.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asr_pipeline.common.memory import (
    ONEDNN_CACHE_VARIABLE,
    configure_memory,
    limit_onednn_primitive_cache,
    peak_rss_mb,
    set_mmap_threshold,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def run_in_fresh_interpreter(
    script: str, *args: str, drop: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> str:
    """What ``script`` prints, run by a new interpreter that imports this checkout, without the
    environment variables whose names start with one of ``drop`` and with ``env`` added."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    environment |= {"PYTHONPATH": str(SRC), **(env or {})}
    command = [sys.executable, "-c", script, *args]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


# Bytes glibc serves from mappings of their own (mallinfo2's hblkhd) gained by one 4 MB block,
# allocated after a freed 20 MB mapping has raised glibc's dynamic threshold to 20 MB.
PROBE = """
import ctypes, ctypes.util, sys
from asr_pipeline.common.memory import (
    limit_onednn_primitive_cache,
    peak_rss_mb,
    set_mmap_threshold,
)

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "set":
    assert set_mmap_threshold(1.0)
libc.free(libc.malloc(20 << 20))
before = libc.mallinfo2().hblkhd
block = libc.malloc(4 << 20)
print(libc.mallinfo2().hblkhd - before)
libc.free(block)
"""

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="mallopt's mmap threshold is glibc's"
)


def mapped_bytes_of_a_4mb_block(mode: str) -> int:
    return int(run_in_fresh_interpreter(PROBE, mode, drop=("MALLOC_",)).strip())


@glibc_only
def test_a_fixed_threshold_maps_blocks_that_the_dynamic_one_keeps_in_the_heap():
    # glibc's default: after the 20 MB block, a 4 MB one comes from the heap (and stays there
    # when freed); with a 1 MB threshold it gets a mapping of its own, returned when freed
    assert mapped_bytes_of_a_4mb_block("default") == 0
    assert mapped_bytes_of_a_4mb_block("set") >= 4 << 20


def test_a_threshold_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        set_mmap_threshold(0)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads Linux's /proc")
def test_peak_rss_grows_by_what_the_process_touches():
    resident_mb = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    resident_mb /= 2**20
    before = peak_rss_mb()
    # touch enough to pass the old peak by 100 MB (KB or bytes read as MB would not see it)
    held = b"x" * int((before - resident_mb + 100) * 2**20)
    assert 90 <= peak_rss_mb() - before <= 130
    del held


# Resident MB of a process that frees 200 MB of 4 KB heap blocks but keeps every 64th (so glibc
# cannot give the heap back by moving its top), before and after release_free_memory().
FRAGMENTED = """
import ctypes, ctypes.util
from asr_pipeline.common.memory import current_rss_mb, release_free_memory

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
blocks = [libc.malloc(4096) for _ in range(50_000)]
for block in blocks:
    ctypes.memset(block, 1, 4096)
for i, block in enumerate(blocks):
    if i % 64:
        libc.free(block)
before = current_rss_mb()
released = release_free_memory()
print(before, current_rss_mb(), released)
"""


@glibc_only
def test_releasing_free_memory_gives_a_fragmented_heap_back():
    printed = run_in_fresh_interpreter(FRAGMENTED, drop=("MALLOC_",))
    before, after, released = printed.split()
    # ~195 MB of free pages sat in the heap; malloc_trim hands nearly all of them back
    assert released == "True"
    assert float(before) - float(after) > 150, printed


# Resident MB of a process before, while and after it holds a table of a million words (pandas
# keeps strings in Arrow buffers, from Arrow's own pool), then once release_free_memory() ran.
ARROW_TABLE = """
import pandas as pd
from asr_pipeline.common.memory import current_rss_mb, release_free_memory

start = current_rss_mb()
table = pd.DataFrame({"word": [f"word{i:07d}" for i in range(1_000_000)], "count": 1.0})
held = current_rss_mb()
del table
release_free_memory()
print(start, held, current_rss_mb())
"""


def test_releasing_free_memory_gives_arrows_pool_back():
    # Arrow's pool (mimalloc here) kept ~50 MB of this table resident after it was dropped, and
    # glibc's trim cannot reach it: what a pipeline node left there, training would carry.
    printed = run_in_fresh_interpreter(ARROW_TABLE, drop=("MALLOC_", "ARROW_"))
    start, held, after = map(float, printed.split())
    assert held - start > 40, printed  # the table was big enough to see
    assert after - start < 20, printed


ONEDNN_PROBE = """
import os, sys
from asr_pipeline.common.memory import ONEDNN_CACHE_VARIABLE, limit_onednn_primitive_cache
print(limit_onednn_primitive_cache(int(sys.argv[1])), os.environ.get(ONEDNN_CACHE_VARIABLE))
"""


@pytest.mark.parametrize(("preset", "expected"), [(None, "True 0"), ("16", "False 16")])
def test_the_onednn_cache_limit_is_set_for_the_process_unless_the_user_set_one(preset, expected):
    # oneDNN reads the variable when the process compiles its first kernel; a user's own wins
    user = {} if preset is None else {ONEDNN_CACHE_VARIABLE: preset}
    printed = run_in_fresh_interpreter(ONEDNN_PROBE, "0", drop=(ONEDNN_CACHE_VARIABLE,), env=user)
    assert printed.split() == expected.split()
    for capacity in (-1, 0.5, True, "0"):
        with pytest.raises(ValueError, match="0 or more"):
            limit_onednn_primitive_cache(capacity)


CONVOLUTIONS = """
import sys, torch
from asr_pipeline.common.memory import limit_onednn_primitive_cache
if sys.argv[1] == "limit":
    limit_onednn_primitive_cache(0)
convolution, x = torch.nn.Conv2d(1, 8, 3), torch.randn(2, 1, 40, 50)
for _ in range(3):
    convolution(x)
"""


def convolution_kernels(mode: str) -> dict[str, int]:
    """oneDNN's own account (ONEDNN_VERBOSE) of the kernels three equal convolutions created."""
    printed = run_in_fresh_interpreter(
        CONVOLUTIONS, mode, drop=(ONEDNN_CACHE_VARIABLE,), env={"ONEDNN_VERBOSE": "profile_create"}
    )
    events = [line.split(",")[3] for line in printed.splitlines() if ",convolution," in line]
    return {event: events.count(event) for event in set(events)}


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
def test_with_the_limit_onednn_compiles_each_convolution_afresh_instead_of_caching_it():
    assert convolution_kernels("default") == {"create:cache_miss": 1, "create:cache_hit": 2}
    assert convolution_kernels("limit") == {"create:cache_miss": 3}


# An AdamW step (torch.optim imports torch._dynamo, which imports Triton when it is installed),
# then whether the process mapped libtriton.so, and the trained weight moved.
TRITON_PROBE = """
import sys, torch
from asr_pipeline.common.memory import configure_memory
available = torch.cuda.is_available
if sys.argv[1] == "gpu":
    torch.cuda.is_available = lambda: True  # as on a machine with a GPU, while it is configured
configure_memory(None, None, None if sys.argv[2] == "null" else sys.argv[2] == "true")
torch.cuda.is_available = available
layer = torch.nn.Linear(4, 1)
optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
before = layer.weight.detach().clone()
layer(torch.ones(2, 4)).sum().backward()
optimizer.step()
mapped = "libtriton" in open("/proc/self/maps").read()
print("torch._dynamo" in sys.modules, mapped, not torch.equal(before, layer.weight))
"""


def triton_after_an_optimizer_step(machine: str, setting: str) -> list[str]:
    return run_in_fresh_interpreter(TRITON_PROBE, machine, setting).split()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc")
@pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="Triton is not installed here"
)
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_without_a_gpu_the_optimizer_runs_without_loading_triton_unless_asked_to():
    # dynamo imported, Triton mapped or not, the step moved the weight
    assert triton_after_an_optimizer_step("cpu", "false") == ["True", "False", "True"]
    assert triton_after_an_optimizer_step("cpu", "true") == ["True", "True", "True"]
    assert triton_after_an_optimizer_step("cpu", "null") == ["True", "True", "True"]
    # where there is a GPU, Triton is left to load whatever the setting
    assert triton_after_an_optimizer_step("gpu", "false") == ["True", "True", "True"]


def test_the_triton_setting_is_refused_unless_true_false_or_null():
    # the hook applies it in every pipeline, not only where TrainingConfig checks it
    for setting in (0, 1, "false", "no"):
        with pytest.raises(ValueError, match="expected true, false or null"):
            configure_memory(None, None, setting)


ARROW_POOL = """
import asr_pipeline.settings  # noqa: F401  (what every kedro command reads first)
import pandas as pd
import pyarrow

pd.DataFrame({"word": ["a", "b"]})
print(pyarrow.default_memory_pool().backend_name)
"""


@pytest.mark.parametrize(("preset", "expected"), [(None, "system"), ("mimalloc", "mimalloc")])
def test_the_project_gives_arrows_allocations_to_malloc_unless_the_user_chose(preset, expected):
    user = {} if preset is None else {"ARROW_DEFAULT_MEMORY_POOL": preset}
    printed = run_in_fresh_interpreter(ARROW_POOL, drop=("ARROW_DEFAULT_MEMORY_POOL",), env=user)
    assert printed.split()[-1] == expected
