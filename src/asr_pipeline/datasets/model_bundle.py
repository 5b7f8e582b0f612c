"""The trained model bundle: a local file, or the one inside a registered MLflow model.

``filepath`` may be a path or a ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` / ``runs:/`` URI;
URIs are read-only. Loading never unpickles code (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from kedro.io import DatasetError

from asr_pipeline.datasets.torch_dataset import TorchDataset

MLFLOW_SCHEMES = ("models:/", "runs:/")
BUNDLE_ARTIFACT = "artifacts/acoustic_model.pt"


def resolve_bundle_path(uri: str) -> Path:
    """Local path of the bundle behind ``uri`` (downloading it from MLflow when needed)."""
    if not uri.startswith(MLFLOW_SCHEMES):
        return Path(uri)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri.rstrip("/"))
    except Exception as error:  # MlflowException, RestException, ...
        raise DatasetError(
            f"cannot load model {uri!r} from the MLflow registry at {mlflow.get_tracking_uri()}: "
            f"{error}"
        ) from error
    path = Path(local) / BUNDLE_ARTIFACT
    if not path.exists():
        raise DatasetError(f"{uri} is not an asr-pipeline model: {BUNDLE_ARTIFACT} is missing")
    return path


class ModelBundleDataset(TorchDataset):
    """A :class:`TorchDataset` whose path may also be an MLflow model URI (then read-only)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        super().__init__(filepath, metadata)
        self._uri = filepath

    def load(self) -> dict[str, Any]:
        self._filepath = resolve_bundle_path(self._uri)
        bundle = super().load()
        bundle["source"] = self._uri
        return bundle

    def save(self, data: dict[str, Any]) -> None:
        if self._uri.startswith(MLFLOW_SCHEMES):
            raise DatasetError(f"{self._uri} is a registered model: it cannot be overwritten")
        super().save(data)

    def _exists(self) -> bool:
        return self._uri.startswith(MLFLOW_SCHEMES) or super()._exists()
