"""Shared fixtures: the real LibriSpeech sample and throw-away Kedro projects.

The helpers behind them (and those tests import directly) live in tests/support.py: a conftest is
for fixtures, and importing one by module name ties the tests to how pytest loads it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import LIBRISPEECH_MISSING, make_project, shared_librispeech

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def librispeech_root() -> Path:
    """The shared LibriSpeech sample; tests that need it skip, saying where to put it, without."""
    root = shared_librispeech()
    if root is None:
        pytest.skip(LIBRISPEECH_MISSING)
    return root


@pytest.fixture(scope="session")
def general_lm():
    """The catalog's general-English LM (pocketsphinx's en-us.lm.bin), read once."""
    from asr_pipeline.datasets import SphinxLMDataset

    return SphinxLMDataset().load()


@pytest.fixture
def kedro_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary project as the working directory, tracking to its own SQLite store."""
    project = make_project(tmp_path / "project")
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    return project
