"""The MLflow model registry: which version a model URI means, the champion alias, and the model
bundle behind a registered model (or a local file)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import torch
from kedro.io import DatasetError
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)/?$")
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)/?$")


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` -> (NAME, ALIAS, None); ``models:/NAME/3`` -> (NAME, None, "3")."""
    if match := _ALIAS_URI.match(uri):
        return match["name"], match["alias"], None
    if match := _VERSION_URI.match(uri):
        return match["name"], None, match["version"]
    raise ValueError(f"{uri!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")


def resolve_version(client: MlflowClient, uri: str) -> tuple[str, str]:
    """(name, version) that a registry URI points at; a clear error when there is none."""
    name, alias, version = parse_model_uri(uri)
    try:
        if alias is not None:
            return name, client.get_model_version_by_alias(name, alias).version
        return name, client.get_model_version(name, version).version
    except MlflowException as error:
        raise ValueError(f"no model version for {uri}: {error.message}") from error


def champion_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return client.get_model_version_by_alias(name, alias).version
    except MlflowException:
        return None


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
