"""Helpers the tests share, and the one home of those the benchmarks share with them.

The tests stand alone: they import the package and this module, never ``benchmarks/``. The
benchmark scripts import the helpers below through ``benchmarks/common.py`` instead of keeping
their own copies, so this module imports nothing beyond the standard library and PyYAML at import
time (no pytest: a benchmark runs without it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF = PROJECT_ROOT / "conf"
DEFAULT_LIBRISPEECH = PROJECT_ROOT.parent / "shared" / "librispeech" / "LibriSpeech"
LIBRISPEECH_MISSING = (
    f"shared LibriSpeech sample not found (set LIBRISPEECH_DIR or put it at {DEFAULT_LIBRISPEECH})"
)
DATA_LAYERS = (
    "01_raw",
    "02_intermediate",
    "03_primary",
    "04_feature",
    "05_model_input",
    "06_models",
    "07_model_output",
    "08_reporting",
)

# A small real `kedro run`: a few utterances per speaker, a tiny model, one epoch.
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
        # the general LM pruned harder: an 8 MB ARPA instead of 100 MB to write and load
        "beam_search.general_lm_prune=1.0e-6",
    ]
)


def librispeech_path() -> Path:
    """Where LibriSpeech is expected: $LIBRISPEECH_DIR, else ../shared/librispeech/LibriSpeech.

    Only the lookup: whether it is there is for the caller to decide (a test skips, a benchmark
    exits), since each needs different subsets of it.
    """
    return Path(os.environ.get("LIBRISPEECH_DIR") or DEFAULT_LIBRISPEECH)


def shared_librispeech() -> Path | None:
    """The shared LibriSpeech sample, or None when it is not there (no train-clean-100)."""
    root = librispeech_path()
    return root if (root / "train-clean-100").is_dir() else None


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nothing listens on now (the OS picks it; the socket is closed again)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def make_project_copy(target: Path) -> Path:
    """A throw-away copy of the project (pyproject, conf, package), without data/.

    Commands that write data, MLflow stores or builds run in the copy, never in the checkout.
    """
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "pyproject.toml", target / "pyproject.toml")
    shutil.copytree(CONF, target / "conf")
    shutil.copytree(
        PROJECT_ROOT / "src" / "asr_pipeline",
        target / "src" / "asr_pipeline",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return target


def make_project(target: Path) -> Path:
    """:func:`make_project_copy` with the empty data/ layers a fresh checkout has."""
    make_project_copy(target)
    for layer in DATA_LAYERS:
        (target / "data" / layer).mkdir(parents=True)
    return target


def project_params(name: str, env: str = "base") -> dict[str, Any]:
    """One parameters file of ``conf/<env>`` (e.g. ``training``), read as YAML: no interpolation."""
    return yaml.safe_load((CONF / env / f"parameters_{name}.yml").read_text())


def base_parameters() -> dict[str, Any]:
    """Every parameter of ``conf/base`` (all its parameters*.yml files), without interpolation.

    Reading the files themselves keeps a developer's conf/local out of the tests; the few
    ``${...}`` values left unresolved are ones an in-memory run overrides or never uses.
    """
    merged: dict[str, Any] = {}
    for path in sorted((CONF / "base").glob("parameters*.yml")):
        merged |= yaml.safe_load(path.read_text()) or {}
    return merged


def catalog_config(name: str, env: str = "base") -> dict[str, Any]:
    """One entry of ``conf/<env>/catalog.yml`` as written (no interpolation)."""
    return yaml.safe_load((CONF / env / "catalog.yml").read_text())[name]


def project_dataset(name: str, env: str = "base", config: dict[str, Any] | None = None):
    """One catalog entry (or ``config``) built as Kedro builds it."""
    from kedro.io import AbstractDataset

    return AbstractDataset.from_config(name, config or catalog_config(name, env))


# -- the project's commands in a subprocess, as a user runs them -------------------------------
BIN = Path(sys.executable).parent  # the virtual environment's kedro, asr-transcribe, mlflow


def command_env(project: Path, librispeech: Path, model_name: str) -> dict[str, str]:
    """The environment of a command run in ``project``: its own MLflow store and model cache."""
    return {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "1",
        "LIBRISPEECH_DIR": str(librispeech),
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "ASR_MODEL_NAME": model_name,
        "ASR_MODEL_CACHE": str(project / "model_cache"),  # asr-transcribe's, not ~/.cache
        "OMP_NUM_THREADS": "1",
        # `mlflow models serve` starts uvicorn by name: the venv's bin must be on PATH
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def run_checked(
    args: list[str], project: Path, env: dict[str, str], timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run a command in ``project``; a failure shows the end of its output."""
    result = subprocess.run(
        args, cwd=project, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    return result


def run_transcribe(
    project: Path,
    env: dict[str, str],
    args: list[str],
    command: tuple[str, ...] = ("asr-transcribe",),
) -> subprocess.CompletedProcess:
    """The transcription command (the console script, or ``kedro transcribe``), not checked."""
    return subprocess.run(
        [str(BIN / command[0]), *command[1:], *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
