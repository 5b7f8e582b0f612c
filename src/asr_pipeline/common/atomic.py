"""Writing files so that readers never see half of one: a temporary file, then a rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

TEMPORARY_PREFIX = ".tmp-"


def atomic_torch_save(data: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file in the same folder (an atomic rename)."""
    _atomic_write(path, lambda tmp: torch.save(data, tmp))


def atomic_write_bytes(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    _atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMPORARY_PREFIX, suffix=path.suffix)
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
