"""Writing files so that readers never see half of one: a temporary file, then a rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

TEMPORARY_PREFIX = ".tmp-"


def atomic_torch_save(data: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file in the same folder (an atomic rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMPORARY_PREFIX, suffix=path.suffix)
    os.close(handle)
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
