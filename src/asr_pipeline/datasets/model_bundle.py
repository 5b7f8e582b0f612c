"""The trained model bundle: a local file, or the one inside a registered MLflow model.

``filepath`` may be a path or a ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` / ``runs:/`` URI;
URIs are read-only. Loading never unpickles code (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import torch
from kedro.io import DatasetError

from asr_pipeline.datasets.torch_dataset import TorchDataset

MLFLOW_SCHEMES = ("models:/", "runs:/")
BUNDLE_ARTIFACT = "artifacts/acoustic_model.pt"


def load_bundle(uri: str) -> dict[str, Any]:
    """The bundle behind a path or an MLflow model URI, with its ``source`` recorded.

    A registered model is downloaded into a temporary folder that is removed once the bundle is in
    memory, so repeated loads leave nothing behind.
    """
    if not uri.startswith(MLFLOW_SCHEMES):
        path = Path(uri)
        if not path.exists():
            raise DatasetError(f"{path} does not exist: train a model or pass a models:/ URI")
        bundle = torch.load(path, weights_only=True, map_location="cpu")
    else:
        with tempfile.TemporaryDirectory(prefix="asr-model-") as folder:
            try:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=uri.rstrip("/"), dst_path=folder
                )
            except Exception as error:  # MlflowException, RestException, ...
                raise DatasetError(
                    f"cannot load model {uri!r} from the MLflow registry at "
                    f"{mlflow.get_tracking_uri()}: {error}"
                ) from error
            path = Path(local) / BUNDLE_ARTIFACT
            if not path.exists():
                raise DatasetError(f"{uri} is not an asr-pipeline model: no {BUNDLE_ARTIFACT}")
            bundle = torch.load(path, weights_only=True, map_location="cpu")
    bundle["source"] = uri
    return bundle


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
