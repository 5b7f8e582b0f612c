"""The transcription command takes its default model and tracking URI from the project's conf.

One place says which model is served and where MLflow is: ``conf/*/globals.yml`` (the registered
model name and champion alias, used by the catalog's ``inference_model``) and ``mlflow.yml``. The
command reads them with Kedro's config loader, so overriding them in a conf environment moves
``kedro run``, the inference pipeline and ``kedro transcribe`` together.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from kedro.io import DatasetError

from asr_pipeline import cli
from asr_pipeline.serving import registry
from tests.support import make_project

# Kedro 1.7 calls OmegaConf's deprecated register_new_resolver itself
pytestmark = pytest.mark.filterwarnings("ignore:register_new_resolver:UserWarning")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project as the working directory, with no environment overrides."""
    root = make_project(tmp_path / "project")
    for stray in (root / "conf" / "local").glob("*.yml"):
        stray.unlink()  # a developer's own overrides are not the project's defaults
    monkeypatch.chdir(root)
    for name in ("ASR_MODEL_NAME", "MLFLOW_TRACKING_URI", "KEDRO_ENV"):
        monkeypatch.delenv(name, raising=False)
    # bootstrapping the copy puts its src/ on sys.path and PYTHONPATH: undo that afterwards
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    return root


def _override(project: Path, env: str, name: str, text: str) -> None:
    folder = project / "conf" / env
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)


def test_defaults_are_the_base_conf(project: Path) -> None:
    defaults = cli.project_defaults()
    assert defaults == cli.ProjectDefaults(
        "models:/asr-librispeech@champion", "sqlite:///mlflow.db"
    )


def test_defaults_follow_conf_overrides(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _override(project, "local", "globals.yml", "registered_model_name: asr-from-conf\n")
    _override(project, "local", "mlflow.yml", "server:\n  mlflow_tracking_uri: sqlite:///x.db\n")
    _override(project, "staging", "globals.yml", "champion_alias: candidate\n")
    assert cli.project_defaults() == cli.ProjectDefaults(
        "models:/asr-from-conf@champion", "sqlite:///x.db"
    )
    # another environment, as `kedro run --env staging` would read it
    staging = cli.project_defaults("staging")
    assert staging == cli.ProjectDefaults(
        "models:/asr-librispeech@candidate", "sqlite:///mlflow.db"
    )
    # the variables the conf reads still work through it
    monkeypatch.setenv("ASR_MODEL_NAME", "asr-from-env")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert cli.project_defaults("staging") == cli.ProjectDefaults(
        "models:/asr-from-env@candidate", "http://127.0.0.1:5999"
    )


def test_outside_a_project_the_fallback_is_mlflows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ASR_MODEL_NAME", raising=False)
    assert cli.project_defaults(start=tmp_path) == cli.ProjectDefaults(
        "models:/asr-librispeech@champion", None
    )
    monkeypatch.setenv("ASR_MODEL_NAME", "asr-elsewhere")
    assert cli.project_defaults(start=tmp_path).model == "models:/asr-elsewhere@champion"


def test_the_command_uses_the_conf_defaults(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``transcribe`` without --model / --tracking-uri asks the conf's model on the conf's store."""
    _override(project, "local", "globals.yml", "registered_model_name: asr-from-conf\n")
    _override(project, "shared", "mlflow.yml", "server:\n  mlflow_tracking_uri: sqlite:///s.db\n")
    asked: list[tuple[str, str]] = []

    def fake_load_bundle(uri: str, cache_dir: Path | None = None) -> dict:
        import mlflow

        asked.append((uri, mlflow.get_tracking_uri()))
        raise DatasetError(f"no model {uri} here")

    monkeypatch.setattr(registry, "load_bundle", fake_load_bundle)
    runner = CliRunner()
    result = runner.invoke(cli.cli, ["transcribe", "a.flac"])
    assert result.exit_code == 2, result.output
    assert "models:/asr-from-conf@champion" in result.output
    result = runner.invoke(cli.cli, ["transcribe", "a.flac", "--env", "shared"])
    explicit = [
        "transcribe",
        "a.flac",
        "--model",
        "models:/other/3",
        "--tracking-uri",
        "sqlite:///o",
    ]
    runner.invoke(cli.cli, explicit)
    models = [uri for uri, _ in asked]
    stores = [store.rsplit("/", 1)[-1] for _, store in asked]
    # `--env shared` reads base + shared, as `kedro run --env shared` does: not conf/local
    assert models == [
        "models:/asr-from-conf@champion",
        "models:/asr-librispeech@champion",
        "models:/other/3",
    ]
    assert stores == ["mlflow.db", "s.db", "o"]
