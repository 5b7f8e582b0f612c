"""The README's commands end to end on a small real subset: train, track, register, evaluate,
promote, transcribe and serve, against a real SQLite MLflow store in a temporary project."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from asr_pipeline.model.bundle import bundle_lm
from asr_pipeline.serving.registry import load_bundle
from tests.support import (
    BIN,
    LIBRISPEECH_MISSING,
    SMALL_RUN,
    command_env,
    free_port,
    make_project,
    run_checked,
    run_transcribe,
    shared_librispeech,
)

pytestmark = pytest.mark.slow
MODEL_NAME = "asr-e2e"


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory: pytest.TempPathFactory):
    librispeech = shared_librispeech()
    if librispeech is None:
        pytest.skip(LIBRISPEECH_MISSING)
    project = make_project(tmp_path_factory.mktemp("e2e"))
    env = command_env(project, librispeech, MODEL_NAME)
    result = run_checked(
        [str(BIN / "kedro"), "run", "--env", "shared", "--params", SMALL_RUN], project, env
    )
    return project, env, result


def test_default_run_tracks_and_registers(trained_project):
    project, env, result = trained_project
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("asr_pipeline")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["training.preset"] == "default"
    assert run.data.params["training.model.rnn_dim"] == "48"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1]
    for metric in (
        "val_loss",
        "val_per",  # phones, the default units: phone error rate beside the beam's CER/WER
        "learning_rate",
        "audio_seconds_per_second",
        "test_greedy_per",
        "test_beam_cer",
        "test_beam_wer",
        "peak_rss_mb",
    ):
        assert metric in run.data.metrics, metric
    for tag in ("git_commit", "manifest_sha1", "feature_params"):
        assert tag in run.data.tags
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/training_curves.png", "plots/feature_example.png"} <= artifacts
    evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/evaluation_transcripts.csv" in evaluation
    beam_search = {a.path for a in client.list_artifacts(run.info.run_id, "beam_search")}
    assert "beam_search/beam_settings.json" in beam_search
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert [v.run_id for v in versions] == [run.info.run_id]
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.version == versions[0].version
    assert "test_wer" in champion.tags
    # the closing summary is printed for people
    assert "CER" in result.stdout and "champion" in result.stdout
    # and the memory it took, with the node that set the peak (PeakMemoryHook)
    logs = result.stdout + result.stderr
    peak = re.search(r"Peak memory of the run: (\d+) MB \(node (\w+)\)", logs)
    assert peak is not None and int(peak.group(1)) > 0, logs[-2000:]
    assert f"raised by node {peak.group(2)}" in logs
    report = json.loads((project / "data/08_reporting/evaluation_report.json").read_text())
    assert set(report["decoders"]) == {"greedy", "beam"}
    # the registered model carries its beam search: the run's LM and the settings tuned for it
    settings = json.loads((project / "data/08_reporting/beam_settings.json").read_text())
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:
        registered = load_bundle(f"models:/{MODEL_NAME}@champion")
    finally:
        mlflow.set_tracking_uri(previous_uri)
    lm_file = project / "data/06_models/word_lm.arpa.gz"
    assert bundle_lm(registered["decoder"]).text() == gzip.decompress(lm_file.read_bytes()).decode()
    assert registered["decoder"]["beam"]["beam_size"] == 8
    assert registered["decoder"]["beam"]["lm_weight"] == settings["lm_weight"]
    assert registered["decoder"]["tuning"]["split"] == "validation"


def test_inference_pipeline_and_cli_transcribe_registered_model(trained_project):
    project, env, _ = trained_project
    out = project / "data/07_model_output/ids.json"
    run_checked(
        [
            str(BIN / "kedro"),
            "run",
            "--env",
            "shared",
            "--pipelines",
            "inference",
            "--params",
            f"inference.inputs=1272-128104-0000,output={out}",
        ],
        project,
        env,
    )
    results = json.loads(out.read_text())
    assert results[0]["input"] == "1272-128104-0000" and not results[0]["error"]
    assert results[0]["reference"].startswith("mister quilter")
    assert results[0]["decoder"] == "beam"  # the registered model's own beam search
    missing = run_transcribe(project, env, ["9999-1-0001", "--decoder", "greedy"])
    assert missing.returncode == 1 and "not found" in missing.stdout + missing.stderr
    unknown_model = run_transcribe(
        project, env, ["1272-128104-0000", "--model", "models:/nope@champion"]
    )
    assert unknown_model.returncode == 2 and "nope" in unknown_model.stderr


def test_served_model_answers_like_in_process(trained_project, librispeech_root):
    project, env, _ = trained_project
    audio = next((librispeech_root / "dev-clean-2").rglob("*.flac"))
    cli = run_transcribe(project, env, [str(audio), "--json", str(project / "cli.json")])
    assert cli.returncode == 0, cli.stderr
    expected = json.loads((project / "cli.json").read_text())[0]["text"]

    port = free_port()
    log = (project / "server.log").open("wb")
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{MODEL_NAME}@champion",
            "--env-manager",
            "local",
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
        ],
        cwd=project,
        # the worker count `mlflow models serve` reads (its --workers); each worker is a process
        # with its own model and decoders
        env={**env, "MLFLOW_MODELS_WORKERS": "2"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        payload = {
            "dataframe_split": {
                "columns": ["audio"],
                "data": [
                    [base64.b64encode(audio.read_bytes()).decode()],
                    [base64.b64encode(b"not audio at all").decode()],
                    [""],
                ],
            }
        }
        answer = _post_when_ready(port, payload, server, project / "server.log")
        predictions = answer["predictions"]
        assert predictions[0]["text"] == expected and predictions[0]["error"] == ""
        assert predictions[1]["error"] and predictions[2]["error"]
        # over the row limit: a short JSON error naming it, no stack trace
        too_many = {"dataframe_split": {"columns": ["audio"], "data": [[""]] * 65}}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(too_many).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        body = refused.value.read().decode()
        assert refused.value.code == 400, body
        assert (
            json.loads(body)["message"] == "65 rows in one request: at most 64 (max_rows), split it"
        )
        assert "Traceback" not in body and "stack_trace" not in body
        # two worker processes (the first to start may answer all of the above while the other
        # still loads: wait for it)
        deadline = time.monotonic() + 120
        while True:
            log_text = _read(project / "server.log")
            served_by = set(re.findall(r"Started server process \[(\d+)\]", log_text))
            if len(served_by) == 2 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert len(served_by) == 2, log_text[-3000:]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


def _post_when_ready(
    port: int, payload: dict, server: subprocess.Popen, log: Path, wait_s: float = 120
):
    deadline = time.monotonic() + wait_s
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    while True:
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                output = log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"the model server did not answer:\n{output}") from None
            time.sleep(1)


def test_evaluate_registered_model_keeps_champion(trained_project):
    project, env, _ = trained_project
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    result = run_checked(
        [
            str(BIN / "kedro"),
            "run",
            "--env",
            "shared",
            "--pipelines",
            "evaluation",
            "--params",
            f"model_uri=models:/{MODEL_NAME}@champion",
        ],
        project,
        env,
    )
    decision = json.loads((project / "data/08_reporting/promotion_decision.json").read_text())
    assert decision["promoted"] is False and "already" in decision["reason"]
    assert "CER" in result.stdout
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == 1


def test_a_registered_model_is_evaluated_on_test_subsets_alone(trained_project, tmp_path):
    """No training subsets: data_engineering splits test speakers only, evaluation scores them.

    In a project of its own on the same registry: the trained project's data stays as it is.
    """
    _, env, _ = trained_project
    project = make_project(tmp_path / "test-only")
    params = ",".join(
        [
            "data_engineering.train_subsets=[]",
            "data_engineering.test_subsets=[dev-clean-2]",
            f"model_uri=models:/{MODEL_NAME}@champion",
        ]
    )
    args = ["--env", "shared", "--pipelines", "data_engineering,evaluation", "--params", params]
    result = run_checked([str(BIN / "kedro"), "run", *args], project, env)
    assert "CER" in result.stdout
    report = json.loads((project / "data/08_reporting/evaluation_report.json").read_text())
    assert set(report["decoders"]) == {"greedy", "beam"}
    splits = pd.read_parquet(project / "data/03_primary/manifest_splits.parquet")
    assert set(splits.split) == {"test"} and set(splits.subset) == {"dev-clean-2"}
    transcripts = pd.read_csv(project / "data/07_model_output/evaluation_transcripts.csv")
    assert set(transcripts.subset) == {"dev-clean-2"}
    assert set(transcripts.utterance_id) == set(splits.utterance_id)


def test_kedro_transcribe_command(trained_project, librispeech_root):
    project, env, _ = trained_project
    result = run_transcribe(
        project,
        env,
        ["1272-128104-0000", "--librispeech-dir", str(librispeech_root)],
        command=("kedro", "transcribe"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reference:  mister quilter" in result.stdout + result.stderr


def test_torchrun_logs_one_run_and_one_version(trained_project):
    """Two DDP processes (gloo): one MLflow run and one new model version, from rank 0 only."""
    project, env, _ = trained_project
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("asr_pipeline")
    runs_before = len(client.search_runs([experiment.experiment_id]))
    versions_before = len(client.search_model_versions(f"name='{MODEL_NAME}'"))
    run_checked(
        [
            str(BIN / "torchrun"),
            "--nproc_per_node=2",
            "--master_port",
            str(free_port()),
            "-m",
            "asr_pipeline.distributed",
            "--env",
            "shared",
            "--params",
            SMALL_RUN,
        ],
        project,
        env,
    )
    assert len(client.search_runs([experiment.experiment_id])) == runs_before + 1
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == versions_before + 1
