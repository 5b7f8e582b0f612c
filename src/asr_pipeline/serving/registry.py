"""The MLflow model registry: which version a model URI means, the champion alias, and the model
bundle behind a registered model (or a local file), downloaded once into a cache when asked."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
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


def default_cache_dir() -> Path:
    """Where registered models are kept between calls, by name and version (every command that
    loads one: ``asr-transcribe``, ``asr-export``, ``asr-stream-server``): ``$ASR_MODEL_CACHE``,
    else the XDG cache."""
    if configured := os.environ.get("ASR_MODEL_CACHE"):
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "asr-pipeline" / "models"


def load_bundle(uri: str, cache_dir: Path | None = None) -> dict[str, Any]:
    """The bundle behind a path or an MLflow model URI, with its ``source`` recorded.

    Without ``cache_dir``, a registered model is downloaded into a temporary folder that is removed
    once the bundle is in memory, so repeated loads leave nothing behind (what a pipeline run
    wants). With it, a ``models:/`` URI is resolved to its version first and downloaded only when
    that version is not cached yet (what a command run again and again wants): see
    :func:`cached_model`.
    """
    if not uri.startswith(MLFLOW_SCHEMES):
        path = Path(uri)
        if not path.exists():
            raise DatasetError(f"{path} does not exist: train a model or pass a models:/ URI")
        bundle = _read_bundle(path, uri)
    elif cache_dir is not None and uri.startswith("models:/"):
        bundle = _read_bundle(cached_model(uri, cache_dir) / BUNDLE_ARTIFACT, uri)
    else:
        with tempfile.TemporaryDirectory(prefix="asr-model-") as folder:
            bundle = _read_bundle(_download(uri, Path(folder)) / BUNDLE_ARTIFACT, uri)
    bundle["source"] = uri
    return bundle


def cached_model(uri: str, cache_dir: Path) -> Path:
    """The local folder of the registered version ``uri`` names, downloaded on first use only.

    The folder is ``cache_dir/NAME/VERSION/FINGERPRINT``: the fingerprint (of the version's
    source, run and creation time) keeps apart two registries that both have a version 1 of the
    same name, so a cached folder is never another model's. The download lands in a temporary
    folder beside it and is renamed into place, so an interrupted or concurrent call never leaves a
    half-written folder that a later call would trust.
    """
    client = MlflowClient()
    try:
        name, version = resolve_version(client, uri)
        found = client.get_model_version(name, version)
    except Exception as error:  # ValueError (no such version), MlflowException, RestException
        raise DatasetError(
            f"cannot resolve model {uri!r} in the MLflow registry at "
            f"{mlflow.get_tracking_uri()}: {error}"
        ) from error
    identity = f"{found.source}|{found.run_id}|{found.creation_timestamp}"
    fingerprint = hashlib.sha1(identity.encode()).hexdigest()[:12]
    final = Path(cache_dir).expanduser() / name / str(version) / fingerprint
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=final.parent))
    try:
        local = _download(f"models:/{name}/{version}", staging)
        if not (local / BUNDLE_ARTIFACT).is_file():
            raise DatasetError(f"{uri} is not an asr-pipeline model: no {BUNDLE_ARTIFACT}")
        try:
            os.rename(local, final)
        except OSError:
            if not final.is_dir():  # not a concurrent call that got there first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _download(uri: str, folder: Path) -> Path:
    """The model's folder, downloaded under ``folder``; a DatasetError that names the registry."""
    try:
        return Path(
            mlflow.artifacts.download_artifacts(artifact_uri=uri.rstrip("/"), dst_path=str(folder))
        )
    except Exception as error:  # MlflowException, RestException, ...
        raise DatasetError(
            f"cannot load model {uri!r} from the MLflow registry at "
            f"{mlflow.get_tracking_uri()}: {error}"
        ) from error


def _read_bundle(path: Path, uri: str) -> dict[str, Any]:
    """Weights only (``weights_only=True``): a model file never runs code when it is read."""
    if not path.exists():
        raise DatasetError(f"{uri} is not an asr-pipeline model: no {BUNDLE_ARTIFACT}")
    return torch.load(path, weights_only=True, map_location="cpu")
