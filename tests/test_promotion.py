"""Champion promotion on a real (temporary) SQLite model registry."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from asr_pipeline.pipelines.evaluation.nodes import promote_model
from asr_pipeline.serving.registry import parse_model_uri, resolve_version

NAME = "asr-promotion-test"
PARAMS = {"promotion_metric": "wer", "champion_alias": "champion"}


@pytest.fixture
def client(tmp_path, monkeypatch) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    # artifacts under tmp_path: the default artifact root is ./mlruns in the working directory
    client.create_experiment("promotion", (tmp_path / "artifacts").as_uri())
    yield client
    mlflow.set_tracking_uri(None)


def _register(client: MlflowClient) -> str:
    """A new model version (its artifacts do not matter to promotion)."""
    experiment = client.get_experiment_by_name("promotion")
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        mlflow.log_text("weights", "recognizer/placeholder.txt")
    if not client.search_registered_models(f"name='{NAME}'"):
        client.create_registered_model(NAME)
    version = client.create_model_version(
        NAME, f"{run.info.artifact_uri}/recognizer", run.info.run_id
    )
    return version.version


def _report(version: str, wer: float, data: str = "data-a") -> dict:
    return {
        "model": f"models:/{NAME}/{version}",
        "split": "test",
        "test_data": data,
        "decoders": {
            "greedy": {
                "wer": wer,
                "cer": wer / 2,
                "substitutions": 1,
                "deletions": 0,
                "insertions": 0,
                "reference_words": 10,
            }
        },
    }


def _promote(report: dict, version: str) -> dict:
    """Promotion as the pipeline calls it: ``version`` is what ``registered_model`` loads as."""
    registered = {"name": NAME, "version": version, "uri": f"models:/{NAME}/{version}"}
    return promote_model(report, registered, None, PARAMS)


def test_first_becomes_champion_better_moves_worse_stays(client):
    first = _register(client)
    decision = _promote(_report(first, 0.50), first)
    assert decision["promoted"] and "first" in decision["reason"]
    assert client.get_model_version_by_alias(NAME, "champion").version == first

    worse = _register(client)
    decision = _promote(_report(worse, 0.60), worse)
    assert not decision["promoted"] and "does not beat" in decision["reason"]
    assert client.get_model_version_by_alias(NAME, "champion").version == first

    better = _register(client)
    decision = _promote(_report(better, 0.40), better)
    assert decision["promoted"] and decision["previous_champion"] == first
    assert client.get_model_version_by_alias(NAME, "champion").version == better
    tags = client.get_model_version(NAME, better).tags
    assert float(tags["test_wer"]) == pytest.approx(0.40)
    assert float(tags["test.data-a.greedy.wer"]) == pytest.approx(0.40)


def test_same_version_again_keeps_the_alias(client):
    version = _register(client)
    _promote(_report(version, 0.5), version)
    decision = _promote(_report(version, 0.5), version)
    assert not decision["promoted"] and "already" in decision["reason"]


def test_nothing_registered_nothing_promoted(client):
    decision = promote_model(_report("1", 0.5), None, None, PARAMS)
    assert decision == {"promoted": False, "reason": "no registered model version for this run"}
    assert not client.search_registered_models(f"name='{NAME}'")


def test_model_uris_and_missing_versions(client):
    assert parse_model_uri("models:/asr@champion") == ("asr", "champion", None)
    assert parse_model_uri("models:/asr/3") == ("asr", None, "3")
    with pytest.raises(ValueError, match="not models:/"):
        parse_model_uri("asr@champion")
    _register(client)
    with pytest.raises(ValueError, match="no model version"):
        resolve_version(client, f"models:/{NAME}/99")
    with pytest.raises(ValueError, match="no model version"):
        resolve_version(client, f"models:/{NAME}@nobody")


def test_phone_models_are_compared_on_the_decoder_that_gives_words(client, monkeypatch):
    # a phone model's greedy decoding gives phones (PER only): it is promoted on its beam search
    phones = _register(client)
    report = _report(phones, 0.5)
    report["decoders"] = {"greedy": {"per": 0.3}, "beam": report["decoders"]["greedy"]}
    decision = _promote(report, phones)
    assert decision["promoted"] and decision["decoder"] == "beam"
    assert "test.data-a.beam.wer" in client.get_model_version(NAME, phones).tags

    # a character model is compared on greedy WER, which the phone champion cannot give
    from asr_pipeline.pipelines.evaluation import nodes

    monkeypatch.setattr(nodes, "_score_champion", lambda *args: None)  # as for phones' greedy
    characters = _register(client)
    decision = _promote(_report(characters, 0.1), characters)
    assert not decision["promoted"] and "gives no words" in decision["reason"]
    assert client.get_model_version_by_alias(NAME, "champion").version == phones
    only_phones = {**report, "decoders": {"greedy": {"per": 0.3}}}
    decision = _promote(only_phones, _register(client))
    assert not decision["promoted"] and "no decoder" in decision["reason"]
