"""The trained model bundle: a local file, or the one inside a registered MLflow model.

``filepath`` may be a path or a ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` / ``runs:/`` URI;
URIs are read-only. Loading never unpickles code (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from typing import Any

from kedro.io import DatasetError

from asr_pipeline.datasets.torch_dataset import TorchDataset
from asr_pipeline.serving.registry import MLFLOW_SCHEMES, load_bundle


class ModelBundleDataset(TorchDataset):
    """A :class:`TorchDataset` whose path may also be an MLflow model URI (then read-only)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        super().__init__(filepath, metadata)
        self._uri = filepath
        self._registered: dict[str, Any] | None = None  # downloaded once per session

    def load(self) -> dict[str, Any]:
        if not self._uri.startswith(MLFLOW_SCHEMES):
            return load_bundle(self._uri)
        if self._registered is None:
            self._registered = load_bundle(self._uri)
        return self._registered

    def save(self, data: dict[str, Any]) -> None:
        if self._uri.startswith(MLFLOW_SCHEMES):
            raise DatasetError(f"{self._uri} is a registered model: it cannot be overwritten")
        super().save(data)

    def _exists(self) -> bool:
        return self._uri.startswith(MLFLOW_SCHEMES) or super()._exists()
