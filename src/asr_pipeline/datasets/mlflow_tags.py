"""Tags on the active MLflow run (kedro-mlflow has datasets for metrics and artifacts, not tags)."""

from __future__ import annotations

from typing import Any

import mlflow
from kedro.io import AbstractDataset, DatasetError


class MlflowTagsDataset(AbstractDataset[dict[str, str], dict[str, str]]):
    """Saving sets each key/value as a tag of the active run (or does nothing without one)."""

    def __init__(self, metadata: dict[str, Any] | None = None) -> None:
        self.metadata = metadata
        self._last: dict[str, str] | None = None

    def save(self, data: dict[str, str]) -> None:
        self._last = {key: str(value) for key, value in data.items()}
        if mlflow.active_run() is not None:
            mlflow.set_tags(self._last)

    def load(self) -> dict[str, str]:
        if self._last is None:
            raise DatasetError("no tags saved in this session")
        return self._last

    def _describe(self) -> dict[str, Any]:
        return {}
