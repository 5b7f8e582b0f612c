"""Shared fixtures: the real LibriSpeech sample and throw-away Kedro projects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.common import make_project_copy

PROJECT_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


def shared_librispeech() -> Path | None:
    """The shared LibriSpeech sample: $LIBRISPEECH_DIR, or ../shared/librispeech/LibriSpeech."""
    candidate = Path(
        os.environ.get("LIBRISPEECH_DIR", PROJECT_ROOT.parent / "shared/librispeech/LibriSpeech")
    )
    return candidate if (candidate / "train-clean-100").is_dir() else None


@pytest.fixture(scope="session")
def librispeech_root() -> Path:
    root = shared_librispeech()
    if root is None:
        pytest.skip(
            "shared LibriSpeech sample not found (set LIBRISPEECH_DIR or put it at "
            "../shared/librispeech/LibriSpeech)"
        )
    return root


def make_project(target: Path) -> Path:
    """A copy of this Kedro project (pyproject, conf, package) in ``target``, with empty data/."""
    make_project_copy(target)
    for layer in (
        "01_raw",
        "02_intermediate",
        "03_primary",
        "04_feature",
        "05_model_input",
        "06_models",
        "07_model_output",
        "08_reporting",
    ):
        (target / "data" / layer).mkdir(parents=True)
    return target


# A small real run: a few utterances per speaker, a tiny model, one epoch.
SMALL_RUN = ",".join(
    [
        "data_engineering.max_utterances_per_speaker=4",
        "training.epochs=1",
        "training.model.rnn_dim=48",
        "training.model.n_rnn_layers=1",
        "training.batch_seconds=30",
        "beam_search.beam_size=8",
        # the tuning grid builds 40 decoders: a 2,000-word lexicon instead of 50,000 saves ~1 s each
        "beam_search.background_words=2000",
    ]
)


@pytest.fixture
def kedro_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary project as the working directory, tracking to its own SQLite store."""
    project = make_project(tmp_path / "project")
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    return project
