"""The served side of benchmarks/inference.py: a bundle saved as an MLflow pyfunc, served by
``mlflow models serve --env-manager local`` with a number of uvicorn workers, and loaded by
concurrent clients (requests/s, audio-s/s, latency quantiles, errors)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import PROJECT_ROOT, free_port

BIN = Path(sys.executable).parent


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_ready(port: int, server: subprocess.Popen, log: Path, wait_s: float) -> float:
    start = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() - start > wait_s:
            raise RuntimeError(f"the model server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def stop(server: subprocess.Popen) -> None:
    """Stop the server and its children (uvicorn workers) by process group."""
    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue


def post(port: int, b64: str) -> tuple[float, dict]:
    payload = {"dataframe_split": {"columns": ["audio"], "data": [[b64]]}}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.loads(response.read())
    return time.perf_counter() - start, answer["predictions"][0]


def load(port: int, audio: list[str], durations: list[float], clients: int, requests: int):
    """``requests`` requests from ``clients`` threads at once: requests/s, audio-s/s, latency."""
    lock, latencies, errors = threading.Lock(), [], []
    served_audio = 0.0

    def one(i: int) -> None:
        nonlocal served_audio
        k = i % len(audio)
        seconds, prediction = post(port, audio[k])
        with lock:
            latencies.append(seconds)
            served_audio += durations[k]
            if prediction.get("error"):
                errors.append(prediction["error"])

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "clients": clients,
        "requests": requests,
        "errors": len(errors),
        "wall_seconds": wall,
        "requests_per_second": requests / wall,
        "audio_seconds_per_second": served_audio / wall,
        "latency_p50_s": statistics.median(latencies),
        "latency_p95_s": quantiles[94],
        "latency_max_s": max(latencies),
    }


def benchmark_server(
    bundle_file: Path,
    files: list[Path],
    client_counts: list[int],
    requests: int,
    threads: int | None,
    workers: int,
) -> dict:
    """Serve ``bundle_file`` as a pyfunc with ``workers`` processes (``MLFLOW_MODELS_WORKERS``,
    which ``mlflow models serve`` reads for its uvicorn workers) and load it with each number of
    concurrent clients in turn."""
    import mlflow.pyfunc
    import soundfile as sf

    from asr_pipeline.serving.pyfunc import SpeechRecognizerModel

    workdir = Path(tempfile.mkdtemp(prefix="inference-server-"))
    model_dir = workdir / "model"
    served = SpeechRecognizerModel()
    mlflow.pyfunc.save_model(  # typed as the training run logs it (no signature warning)
        str(model_dir),
        python_model=served,
        signature=served.signature,
        input_example=served.input_example,
        artifacts={"acoustic_model": str(bundle_file)},
        code_paths=[str(PROJECT_ROOT / "src" / "asr_pipeline")],
        model_config={"threads": threads} if threads else None,
        # explicit requirements: inferring them would load the model in a subprocess
        pip_requirements=["torch==2.14.1", "torchaudio==2.11.0", "soundfile", "pandas"],
    )
    audio = [base64.b64encode(f.read_bytes()).decode() for f in files]
    durations = [sf.info(str(f)).duration for f in files]
    port = free_port()
    log = workdir / "server.log"
    # mlflow runs `uvicorn` by name: the venv's bin must be on PATH even when it is not activated
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {
        **os.environ,
        "PATH": path,
        "MLFLOW_MODELS_WORKERS": str(workers),
        "KEDRO_DISABLE_TELEMETRY": "1",
    }
    command = [str(BIN / "mlflow"), "models", "serve", "-m", str(model_dir)]
    command += ["--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"]
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        ready_s = wait_ready(port, server, log, wait_s=180)
        for k in range(2 * workers):  # every worker loads its model before the clock starts
            post(port, audio[k % len(audio)])
        loads = [
            load(port, audio, durations, clients, max(requests, 2 * clients))
            for clients in client_counts
        ]
    finally:
        stop(server)
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "workers": workers,
        "model_threads": threads,
        "startup_seconds": ready_s,
        "by_clients": {str(load["clients"]): load for load in loads},
        "port_released": port_free(port),
    }
