"""The command's model cache on a real SQLite registry: a registered version is downloaded once.

``asr-transcribe`` resolves ``models:/NAME@ALIAS`` to its version on every call, and downloads that
version only when it is not in the cache yet; each failed input is reported once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from asr_pipeline.audio.features import FeatureConfig, NormalisationStats
from asr_pipeline.cli import cli
from asr_pipeline.model.acoustic import AcousticModel, ModelConfig
from asr_pipeline.model.bundle import make_bundle
from asr_pipeline.serving.pyfunc import SpeechRecognizerModel
from asr_pipeline.serving.registry import load_bundle
from tests.support import project_params

NAME = "asr-cache-test"
BIN = Path(sys.executable).parent


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite registry under tmp_path with one registered version of a tiny random model."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    torch.manual_seed(0)
    features = FeatureConfig.from_params(project_params("feature_engineering")["features"])
    preset = project_params("training")["training"]["presets"]["default"]
    sizes = {"rnn_dim": 16, "n_rnn_layers": 1, "cnn_channels": 4, "n_features": 80}
    config = ModelConfig.from_dict({**preset, **sizes})
    stats = NormalisationStats(mean=[0.0] * 80, std=[1.0] * 80, frames=1)
    bundle_file = tmp_path / "acoustic_model.pt"
    torch.save(
        make_bundle(config, AcousticModel(config).state_dict(), features, stats, {}), bundle_file
    )
    experiment = MlflowClient(uri).create_experiment("cache", (tmp_path / "artifacts").as_uri())
    _register(experiment, bundle_file)
    yield uri
    mlflow.set_tracking_uri(None)


def _register(experiment: str, bundle_file: Path) -> str:
    """A new version of NAME, which the champion alias then names."""
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(
            name="recognizer",
            python_model=SpeechRecognizerModel(),
            artifacts={"acoustic_model": str(bundle_file)},
            registered_model_name=NAME,
            pip_requirements=[],
        )
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias(NAME, "champion", version)
    return version


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The artifact URIs downloaded in this process."""
    seen: list[str] = []
    original = mlflow.artifacts.download_artifacts

    def spy(*args, **kwargs):
        seen.append(kwargs.get("artifact_uri", args[0] if args else None))
        return original(*args, **kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", spy)
    return seen


def test_a_version_is_downloaded_once_and_a_new_one_again(registry, downloads, tmp_path):
    cache = tmp_path / "cache"
    uri = f"models:/{NAME}@champion"
    first = load_bundle(uri, cache)
    second = load_bundle(uri, cache)
    assert downloads == [f"models:/{NAME}/1"]
    assert first["source"] == second["source"] == uri
    assert all(torch.equal(first["state_dict"][k], v) for k, v in second["state_dict"].items())
    # the alias moves to a new version: that one is downloaded, then found
    experiment = mlflow.get_experiment_by_name("cache").experiment_id
    assert _register(experiment, tmp_path / "acoustic_model.pt") == "2"
    load_bundle(uri, cache)
    load_bundle(f"models:/{NAME}/2", cache)
    assert downloads == [f"models:/{NAME}/1", f"models:/{NAME}/2"]
    assert sorted(p.name for p in (cache / NAME).iterdir()) == ["1", "2"]
    assert not list(cache.rglob(".download-*"))  # nothing half-written left behind
    assert load_bundle(uri)["source"] == uri and len(downloads) == 3  # no cache: a fresh copy


def test_the_command_downloads_once_and_reports_each_error_once(
    registry, downloads, tmp_path, librispeech_root
):
    cache = tmp_path / "cache"
    audio = str(next((librispeech_root / "dev-clean-2").rglob("*.flac")))
    missing = str(tmp_path / "missing.flac")
    args = ["--model", f"models:/{NAME}@champion", "--tracking-uri", registry]
    args += ["--cache-dir", str(cache), "--decoder", "greedy"]
    first = subprocess.run(
        [str(BIN / "asr-transcribe"), audio, missing, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert first.returncode == 1, first.stderr
    # one line for the failed input: the node's own log of it is not printed as well
    assert [line for line in first.stderr.splitlines() if "ERROR" in line] == [
        f"{missing}: ERROR {missing}: no such file, and not a LibriSpeech utterance id"
    ], first.stderr
    assert "prediction:" in first.stdout
    again = CliRunner().invoke(cli, ["transcribe", audio, *args], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert downloads == []  # the second call found the first call's download
