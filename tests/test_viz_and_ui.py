"""The project's two UIs work offline: `kedro viz build` shows every pipeline and node, and
`kedro mlflow ui` serves the project's tracking store and stops cleanly."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import PROJECT_ROOT, free_port, make_project

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
PIPELINES_DIR = PROJECT_ROOT / "src" / "asr_pipeline" / "pipelines"
END_TO_END = [
    "data_engineering",
    "feature_engineering",
    "language_model",
    "training",
    "evaluation",
]


def _env(project: Path) -> dict[str, str]:
    return {
        **os.environ,
        # the kedro plugins start `mlflow`, which starts `uvicorn`, by name
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "KEDRO_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "MLFLOW_WORKERS": "1",
        "OMP_NUM_THREADS": "1",
    }


def expected_node_names() -> dict[str, set[str]]:
    """Node names of every pipeline folder, and of ``__default__`` (the end-to-end pipelines)."""
    expected = {}
    for folder in sorted(p.parent for p in PIPELINES_DIR.glob("*/pipeline.py")):
        module = importlib.import_module(f"asr_pipeline.pipelines.{folder.name}")
        expected[folder.name] = {node.name for node in module.create_pipeline().nodes}
    expected["__default__"] = set().union(*(expected[name] for name in END_TO_END))
    return expected


def test_expected_pipelines_are_all_there():
    expected = expected_node_names()
    assert set(END_TO_END) | {"inference", "__default__"} <= set(expected)
    assert all(expected.values())


def test_kedro_viz_build_shows_every_pipeline_and_node(tmp_path: Path):
    project = make_project(tmp_path / "project")
    start = time.monotonic()
    result = subprocess.run(
        [str(BIN / "kedro"), "viz", "build"],
        cwd=project,
        env=_env(project),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    print(f"kedro viz build: {time.monotonic() - start:.0f} s")
    api = project / "build" / "api"
    main = json.loads((api / "main").read_text())
    registered = {p["id"] for p in main["pipelines"]}
    expected = expected_node_names()
    assert set(expected) <= registered, f"missing pipelines {set(expected) - registered}"
    task_names = {n["name"] for n in main["nodes"] if n["type"] == "task"}
    assert expected["__default__"] <= task_names
    for name, nodes in expected.items():
        path = api / "pipelines" / name
        assert path.is_file(), f"no {path.relative_to(project)}"
        pipeline = json.loads(path.read_text())
        tasks = {n["name"] for n in pipeline["nodes"] if n["type"] == "task"}
        assert tasks == nodes, f"{name}: missing {nodes - tasks}, unexpected {tasks - nodes}"
        assert pipeline["selected_pipeline"] == name
        # each node in the pipeline's file is tagged with that pipeline
        assert all(name in n["pipelines"] for n in pipeline["nodes"] if n["type"] == "task")
    assert (project / "build" / "index.html").is_file()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def test_kedro_mlflow_ui_serves_the_project_store_and_stops(tmp_path: Path):
    project = make_project(tmp_path / "project")
    port = free_port()
    log = tmp_path / "ui.log"
    with log.open("wb") as out:
        ui = subprocess.Popen(
            [str(BIN / "kedro"), "mlflow", "ui", "--port", str(port), "--host", "127.0.0.1"],
            cwd=project,
            env=_env(project),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    start = time.monotonic()
    try:
        statuses: dict[str, int | None] = {}
        while time.monotonic() - start < 180:
            statuses = {p: _http_status(f"http://127.0.0.1:{port}{p}") for p in ("/health", "/")}
            if 200 in statuses.values() or ui.poll() is not None:
                break
            time.sleep(1)
        assert 200 in statuses.values(), (
            f"no HTTP 200 from the UI ({statuses}, exit {ui.poll()}):\n{log.read_text()[-3000:]}"
        )
        print(f"kedro mlflow ui answered in {time.monotonic() - start:.0f} s")
        # the UI talks to the project's store: its API lists the store's default experiment
        search = _http_status(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
        )
        assert search == 200
        assert (project / "mlflow.db").is_file()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait(timeout=30)
    deadline = time.monotonic() + 30
    while (_listening(port) or _group_alive(ui.pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _listening(port), f"port {port} still open after stopping the UI"
    # nothing of the process group survives (the mlflow server and its workers included)
    assert not _group_alive(ui.pid)


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of process group ``pgid`` remains."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
