"""A PostgreSQL-backed MLflow tracking server (scripts/tracking_server.py): a real training run
tracked, logged and registered through it; and a down server failing ``kedro run`` in seconds,
before anything runs."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.support import (
    LIBRISPEECH_MISSING,
    PROJECT_ROOT,
    SMALL_RUN,
    free_port,
    make_project,
    shared_librispeech,
)

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
MODEL_NAME = "asr-tracking-server-test"


def _load_script():
    path = PROJECT_ROOT / "scripts" / "tracking_server.py"
    spec = importlib.util.spec_from_file_location("tracking_server", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ts = _load_script()


def _env(tracking_uri: str, librispeech: Path | None) -> dict[str, str]:
    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "1",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "ASR_MODEL_NAME": MODEL_NAME,
        "OMP_NUM_THREADS": "1",
    }
    if librispeech is not None:
        env["LIBRISPEECH_DIR"] = str(librispeech)
    return env


@pytest.fixture(scope="module")
def tracking_server():
    """PostgreSQL and ``mlflow server`` on free loopback ports, stopped by process id at the end."""
    if ts.find_pg_bin("initdb") is None:
        pytest.skip(
            "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH) "
            "and could not be: apt-get install -y postgresql"
        )
    state_dir = Path(tempfile.mkdtemp(prefix="asr-tracking-"))
    state_dir.chmod(0o755)  # the postgres user must reach its cluster inside
    try:
        started = time.monotonic()
        state = ts.start(state_dir, port=free_port())
        print(f"tracking server healthy after {time.monotonic() - started:.1f} s")  # noqa: T201
        yield state
    finally:
        ts.stop(state_dir, quiet=True)
        shutil.rmtree(state_dir, ignore_errors=True)


def test_training_run_is_tracked_and_registered_on_the_server(tracking_server, tmp_path):
    librispeech = shared_librispeech()
    if librispeech is None:
        pytest.skip(LIBRISPEECH_MISSING)
    state = tracking_server
    project = make_project(tmp_path / "project")
    result = subprocess.run(
        [str(BIN / "kedro"), "run", "--env", "shared", "--params", SMALL_RUN],
        cwd=project,
        check=False,
        env=_env(state.tracking_uri, librispeech),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert not (project / "mlflow.db").exists()  # nothing went to the SQLite default

    client = MlflowClient(state.tracking_uri)
    experiment = client.get_experiment_by_name("asr_pipeline")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["training.epochs"] == "1"
    assert run.data.params["training.model.rnn_dim"] == "48"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1]
    # phones, the default units: phone error rates, and words from the beam search
    assert "val_per" in run.data.metrics and "test_beam_wer" in run.data.metrics
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/training_curves.png" in plots
    # artifacts are proxied by the server into its artifact store
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert list(Path(state.artifacts).rglob("training_curves.png"))
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert [v.run_id for v in versions] == [run.info.run_id]
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert champion.version == versions[0].version

    # and the runs really live in PostgreSQL
    import psycopg2

    conn = psycopg2.connect(
        host="127.0.0.1",
        port=state.pg_port,
        user="postgres",
        password=ts.db_password(Path(state.state_dir)),
        dbname="mlflow",
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT run_uuid FROM runs")
            assert [row[0] for row in cur.fetchall()] == [run.info.run_id]
            cur.execute("SELECT name FROM registered_models")
            assert (MODEL_NAME,) in cur.fetchall()
    finally:
        conn.close()


def test_stop_ends_the_server_and_postgres(tracking_server):
    state = tracking_server
    assert ts.health(state.tracking_uri)
    ts.stop(Path(state.state_dir))
    assert not ts.group_members(state.mlflow_pid)
    assert not ts.health(state.tracking_uri)
    assert not ts.postgres_running(Path(state.pgdata))
    for port in (state.pg_port, state.port):
        assert ts.port_is_free(port)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_down_server_fails_kedro_run_fast_before_anything_runs(tmp_path):
    port = free_port()  # nothing listens there
    project = make_project(tmp_path / "project")
    started = time.monotonic()
    result = subprocess.run(
        [str(BIN / "kedro"), "run", "--env", "shared", "--params", SMALL_RUN],
        cwd=project,
        check=False,
        env=_env(f"http://127.0.0.1:{port}", shared_librispeech()),
        capture_output=True,
        text=True,
        timeout=180,  # without the check, MLflow retries for about four minutes
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "unreachable" in output and "make tracking-server" in output, output[-3000:]
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert "train_acoustic_model" not in output
    assert not [p for p in (project / "data").rglob("*") if p.is_file()]  # nothing ran


def test_tracking_check_leaves_other_stores_alone():
    from asr_pipeline.hooks import check_tracking_server

    check_tracking_server(None)
    check_tracking_server("sqlite:///mlflow.db")
    with pytest.raises(RuntimeError, match="unreachable"):
        check_tracking_server(f"http://127.0.0.1:{free_port()}", timeout=2)
