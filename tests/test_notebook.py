"""notebooks/exploration.ipynb runs top to bottom, headless, on a small subset of the shared data:
once against an empty MLflow store (its MLflow sections say so and skip) and once against a store
holding a training run and a registered champion (random weights: only the plumbing matters)."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import nbformat
import pytest
import torch
from mlflow.tracking import MlflowClient
from nbclient import NotebookClient

from tests.support import PROJECT_ROOT, project_params

pytestmark = pytest.mark.slow
NOTEBOOK = PROJECT_ROOT / "notebooks" / "exploration.ipynb"
MODEL_NAME = "asr-notebook"
EXPERIMENT = "asr_pipeline"


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


def _execute(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> str:
    """Run the notebook in a fresh python3 kernel; return the text of all its outputs."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the kernel inherits this process's environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # "python3" is ipykernel's own kernelspec: jupyter_client starts it with sys.executable
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        startup_timeout=120,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    start = time.monotonic()
    client.execute()  # raises CellExecutionError when a cell fails
    print(f"notebook executed in {time.monotonic() - start:.0f} s")
    texts, images = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", output
            if output.output_type == "stream" and output.name == "stdout":
                texts.append(output.text)
            data = output.get("data", {})
            images += "image/png" in data
            texts.append(data.get("text/plain", ""))
    assert images >= 2, "the duration histogram and the features figure are missing"
    return "\n".join(texts)


def _small_run_env(librispeech_root: Path, tracking_uri: str) -> dict[str, str]:
    return {
        "LIBRISPEECH_DIR": str(librispeech_root),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
        "ASR_MODEL_NAME": MODEL_NAME,
        "KEDRO_ENV": "shared",
        "MAX_UTTERANCES": "2",
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "KEDRO_DISABLE_TELEMETRY": "1",
    }


def _check_statistics(text: str) -> None:
    assert "Dataset statistics per split" in text
    for word in ("utterances", "speakers", "hours", "train", "validation", "test", "total"):
        assert word in text, word
    assert "log-mel (" in text and "MFCC (" in text and "(features x frames)" in text


def test_notebook_runs_on_an_empty_store(librispeech_root, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    text = _execute(monkeypatch, _small_run_env(librispeech_root, uri))
    _check_statistics(text)
    assert "No training run" in text
    assert f"No registered model** `{MODEL_NAME}@champion`" in text


def _tracked_store(tmp_path: Path) -> str:
    """A store with one training run (metric histories) and a registered champion."""
    from asr_pipeline.audio.features import FeatureConfig, NormalisationStats
    from asr_pipeline.model.acoustic import AcousticModel, ModelConfig
    from asr_pipeline.model.bundle import make_bundle
    from asr_pipeline.serving.pyfunc import SpeechRecognizerModel

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    features = FeatureConfig.from_params(project_params("feature_engineering")["features"])
    preset = project_params("training")["training"]["presets"]["default"]
    config = ModelConfig.from_dict(
        {**preset, "n_features": features.n_features, "rnn_dim": 32, "n_rnn_layers": 1}
    )
    torch.manual_seed(0)
    bundle = make_bundle(
        config,
        AcousticModel(config).state_dict(),
        features,
        NormalisationStats([0.0] * config.n_features, [1.0] * config.n_features, 1),
        {"note": "random weights"},
    )
    bundle_file = tmp_path / "acoustic_model.pt"
    torch.save(bundle, bundle_file)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(
        EXPERIMENT, artifact_location=(tmp_path / "artifacts").as_uri()
    )
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment_id, run_name="tiny") as run:
            for epoch, (train, val, cer) in enumerate([(3.1, 2.9, 0.9), (2.4, 2.5, 0.7)], 1):
                mlflow.log_metrics(
                    {"train_loss": train, "val_loss": val, "val_cer": cer}, step=epoch
                )
            info = mlflow.pyfunc.log_model(
                name="recognizer",
                python_model=SpeechRecognizerModel(),
                artifacts={"acoustic_model": str(bundle_file)},
                code_paths=[str(PROJECT_ROOT / "src" / "asr_pipeline")],
                pip_requirements=["torch", "torchaudio", "soundfile", "pandas"],
                registered_model_name=MODEL_NAME,
            )
        assert info.run_id == run.info.run_id
        version = client.search_model_versions(f"name='{MODEL_NAME}'")[0].version
        client.set_registered_model_alias(MODEL_NAME, "champion", version)
    finally:
        mlflow.set_tracking_uri(previous)
    return uri


def test_notebook_shows_curves_and_transcripts_of_a_registered_model(
    librispeech_root, tmp_path, monkeypatch
):
    uri = _tracked_store(tmp_path)
    text = _execute(monkeypatch, _small_run_env(librispeech_root, uri))
    _check_statistics(text)
    assert "Training curves of run tiny" in text
    assert "val_cer" in text and "2.4" in text
    assert f"Transcripts of models:/{MODEL_NAME}@champion (version 1" in text
    assert "corpus WER" in text and "REF:" in text and "HYP:" in text
