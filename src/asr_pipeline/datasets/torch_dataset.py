"""A file holding tensors and plain Python values, read back with ``weights_only=True``.

``weights_only`` refuses arbitrary pickled objects, so loading a file never runs code from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError

from asr_pipeline.common.atomic import atomic_torch_save


class TorchDataset(AbstractDataset[Any, Any]):
    """``torch.save`` / ``torch.load(weights_only=True)`` of dicts, lists and tensors."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> Any:
        if not self._filepath.exists():
            raise DatasetError(f"{self._filepath} does not exist: run the pipeline that makes it")
        return torch.load(self._filepath, weights_only=True, map_location="cpu")

    def save(self, data: Any) -> None:
        atomic_torch_save(data, self._filepath)

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
