"""Silencing C libraries that print to the process's stderr (file descriptor 2) themselves.

Some C libraries write chatter straight to fd 2, where Python's ``sys.stderr`` and logging cannot
filter it: libmpg123 when seeking in an MP3 file, KenLM's banner and progress bar while it loads
an ARPA file. Wrap only the one call that chatters, so that everything else (real errors
included) still shows.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_c_stderr() -> Iterator[None]:
    """Send fd 2 to ``/dev/null`` for the duration of the block, then put it back.

    fd 2 is the process's, so another thread's stderr output during the block is lost too: keep
    the block to the one chattering call. Python's own stderr buffer is flushed first, so that
    nothing written before the block is lost.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
