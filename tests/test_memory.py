"""glibc's mmap threshold (asr_pipeline.common.memory): what keeps training's heaps from growing.

Each case runs in a fresh interpreter, so the allocator starts from its defaults.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from asr_pipeline.common.memory import peak_rss_mb, set_mmap_threshold

SRC = Path(__file__).resolve().parents[1] / "src"

# Bytes glibc serves from mappings of their own (mallinfo2's hblkhd) gained by one 4 MB block,
# allocated after a freed 20 MB mapping has raised glibc's dynamic threshold to 20 MB.
PROBE = """
import ctypes, ctypes.util, sys
from asr_pipeline.common.memory import peak_rss_mb, set_mmap_threshold

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
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = str(SRC)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip())


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
