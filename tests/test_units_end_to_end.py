"""A tiny phone model through the real commands: ``kedro run`` trains, registers and evaluates it
against a SQLite MLflow store, then it is evaluated again from the registry, transcribed with
``asr-transcribe`` and served as the registered pyfunc (``mlflow.pyfunc.load_model``, in process:
the HTTP server around the same pyfunc is tests/test_end_to_end.py's)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from asr_pipeline.decoding.language_model import arpa_vocabulary
from asr_pipeline.model.bundle import bundle_lm
from asr_pipeline.serving.registry import load_bundle
from tests.support import (
    BIN,
    LIBRISPEECH_MISSING,
    SMALL_RUN,
    command_env,
    make_project,
    run_checked,
    run_transcribe,
    shared_librispeech,
)

pytestmark = pytest.mark.slow
MODEL_NAME = "asr-e2e-phones"


@pytest.fixture(scope="module")
def phone_project(tmp_path_factory: pytest.TempPathFactory):
    librispeech = shared_librispeech()
    if librispeech is None:
        pytest.skip(LIBRISPEECH_MISSING)
    project = make_project(tmp_path_factory.mktemp("e2e-phones"))
    env = command_env(project, librispeech, MODEL_NAME)
    params = f"{SMALL_RUN},units.kind=phones"
    result = run_checked(
        [str(BIN / "kedro"), "run", "--env", "shared", "--params", params], project, env
    )
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:
        registered = load_bundle(f"models:/{MODEL_NAME}@champion")
    finally:
        mlflow.set_tracking_uri(previous)
    return project, env, result, registered


def test_a_phone_model_is_trained_registered_and_scored_by_per(phone_project):
    project, env, result, registered = phone_project
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("asr_pipeline")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["units.kind"] == "phones"
    for metric in ("val_per", "test_greedy_per", "test_beam_wer", "test_beam_cer"):
        assert metric in run.data.metrics, metric
    assert "val_cer" not in run.data.metrics and "test_greedy_wer" not in run.data.metrics
    quality = {a.path for a in client.list_artifacts(run.info.run_id, "data_quality")}
    assert "data_quality/units_report.json" in quality
    report = json.loads((project / "data/08_reporting/units_report.json").read_text())
    assert report["kind"] == "phones" and report["splits"]["train"]["utterances"] > 0
    # the registered model carries its phones and the pronunciations of its LM's words only
    assert registered["format"] == 3 and registered["units"]["kind"] == "phones"
    lm_words = set(arpa_vocabulary(bundle_lm(registered["decoder"])))
    assert 0 < len(registered["units"]["lexicon"]) <= len(lm_words)
    assert set(registered["units"]["lexicon"]) <= lm_words
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert "test_wer" in champion.tags  # promoted on the beam search's WER: greedy gives phones
    evaluation = json.loads((project / "data/08_reporting/evaluation_report.json").read_text())
    assert "per" in evaluation["decoders"]["greedy"] and "wer" in evaluation["decoders"]["beam"]
    assert "PER" in result.stdout and "champion" in result.stdout


def test_the_registered_phone_model_is_evaluated_again(phone_project):
    project, env, _, _ = phone_project
    uri = f"model_uri=models:/{MODEL_NAME}@champion"
    args = ["run", "--env", "shared", "--pipelines", "evaluation", "--params", uri]
    result = run_checked([str(BIN / "kedro"), *args], project, env)
    decision = json.loads((project / "data/08_reporting/promotion_decision.json").read_text())
    assert decision["promoted"] is False and "already" in decision["reason"]
    assert "PER" in result.stdout


def test_transcribe_and_serve_give_words(phone_project, librispeech_root):
    project, env, _, registered = phone_project
    lm_words = set(arpa_vocabulary(bundle_lm(registered["decoder"])))
    audio = next((librispeech_root / "dev-clean-2").rglob("*.flac"))
    out = project / "phones.json"
    cli = run_transcribe(project, env, [str(audio), "--json", str(out)])
    assert cli.returncode == 0, cli.stderr[-3000:]
    (transcribed,) = json.loads(out.read_text())
    assert transcribed["decoder"] == "beam" and set(transcribed["text"].split()) <= lm_words
    greedy = run_transcribe(project, env, [str(audio), "--decoder", "greedy", "--json", str(out)])
    assert greedy.returncode == 0
    phones = json.loads(out.read_text())[0]["text"].replace("|", " ").split()
    assert all(phone.isupper() for phone in phones)  # greedy decoding of phones gives phones

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:
        served = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    finally:
        mlflow.set_tracking_uri(previous)
    rows = pd.DataFrame({"audio": [base64.b64encode(Path(audio).read_bytes()).decode()]})
    answer = served.predict(rows)
    assert answer.error[0] == "" and answer.text[0] == transcribed["text"]
