"""The WebSocket server, started as ``asr-stream-server`` on a free port, with real clients."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from asr_pipeline.audio.loading import load_audio
from asr_pipeline.decoding.metrics import error_rates
from asr_pipeline.streaming.client import StreamClientError, stream_file, stream_microphone
from asr_pipeline.streaming.recognizer import StreamingRecognizer, StreamingSettings
from tests.streaming_fixtures import (
    FEATURES,
    STREAMING_PARAMS,
    running_server,
    shortest_utterances,
    trained_bundle,
)

MAX_STREAMS, MAX_STREAM_S = 3, 12.0
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(librispeech_root: Path, tmp_path_factory: pytest.TempPathFactory):
    model = tmp_path_factory.mktemp("stream-model") / "streaming.pt"
    torch.save(trained_bundle(librispeech_root), model)
    with running_server(model, MAX_STREAMS, MAX_STREAM_S) as urls:
        yield urls


def health(base: str) -> dict:
    return json.loads(urllib.request.urlopen(base + "/health", timeout=5).read())


def refusal(url: str, *messages: str | bytes) -> dict:
    """The error the server answers to ``messages``; the connection is then closed."""
    with connect(url) as ws:
        answers = []
        try:
            for message in messages:
                ws.send(message)
        except ConnectionClosed:
            pass  # the server may refuse (and close) before the client has said everything
        while True:
            answer = json.loads(ws.recv(timeout=30))
            answers.append(answer)
            if answer["type"] == "error":
                return answer
            assert answer["type"] in {"ready", "partial", "final"}, answers


START = json.dumps({"type": "start", "sample_rate": 16000})


def test_a_streamed_file_gets_partials_then_the_recognizers_final(server, librispeech_root):
    url, _ = server
    utterance = shortest_utterances(librispeech_root)[1]
    messages = stream_file(utterance.path, url, speed=0.0, out=None)
    assert messages[-1] == {"type": "end"}
    partials = [m for m in messages if m["type"] == "partial"]
    finals = [m for m in messages if m["type"] == "final"]
    assert partials and finals
    settings = StreamingSettings.from_params(STREAMING_PARAMS["recognizer"])
    library = StreamingRecognizer(trained_bundle(librispeech_root), settings)
    expected = library.transcribe(load_audio(utterance.path, FEATURES.sample_rate))
    assert [f["text"] for f in finals] == [r.text for r in expected]
    assert all(p["start"] <= p["end"] for p in partials)


def test_another_sample_rate_is_resampled(server, librispeech_root, tmp_path):
    url, _ = server
    utterance = shortest_utterances(librispeech_root)[1]
    signal = load_audio(utterance.path, 44100).numpy()
    path = tmp_path / "44k.wav"
    sf.write(path, signal, 44100, subtype="PCM_16")
    at_16k = stream_file(utterance.path, url, speed=0.0, out=None)
    at_44k = stream_file(path, url, speed=0.0, out=None)
    texts = [" ".join(m["text"] for m in ms if m["type"] == "final") for ms in (at_16k, at_44k)]
    assert error_rates([texts[0]], [texts[1]]).cer <= 0.1, texts


def test_concurrent_streams_each_get_their_own_text(server, librispeech_root):
    url, _ = server
    utterances = shortest_utterances(librispeech_root)[:MAX_STREAMS]
    expected = [
        " ".join(
            m["text"] for m in stream_file(u.path, url, speed=0.0, out=None) if m["type"] == "final"
        )
        for u in utterances
    ]
    got: dict[int, str] = {}

    def run(i: int) -> None:
        messages = stream_file(utterances[i].path, url, speed=4.0, out=None)
        got[i] = " ".join(m["text"] for m in messages if m["type"] == "final")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(utterances))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [got.get(i) for i in range(len(utterances))] == expected


def test_bad_input_is_refused_on_its_stream_only(server, tmp_path):
    url, base = server
    assert "sample_rate" in refusal(url, json.dumps({"type": "start"}))["message"]
    assert (
        "unsupported sample rate 12345"
        in refusal(url, json.dumps({"type": "start", "sample_rate": 12345}))["message"]
    )
    assert (
        "integer" in refusal(url, json.dumps({"type": "start", "sample_rate": "fast"}))["message"]
    )
    assert "start with a text message" in refusal(url, b"\x00\x00")["message"]
    assert "not JSON" in refusal(url, "hello")["message"]
    assert "even number of bytes" in refusal(url, START, b"\x00\x01\x02")["message"]
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, dtype=np.int16), 16000)
    assert "WAV file: send raw 16-bit PCM" in refusal(url, START, wav.read_bytes())["message"]
    assert "binary PCM" in refusal(url, START, "some text")["message"]
    too_long = np.zeros(int(16000 * (MAX_STREAM_S + 1)), dtype="<i2").tobytes()
    assert f"{MAX_STREAM_S:g} s limit" in refusal(url, START, too_long)["message"]
    # too many streams: the ones over the limit are refused, the others keep working
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(url)) for _ in range(MAX_STREAMS)]
        for ws in held:
            ws.send(START)
            assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        assert "server busy" in refusal(url, START)["message"]
        held[0].send(np.zeros(1600, dtype="<i2").tobytes())
        held[0].send(json.dumps({"type": "end"}))
        while json.loads(held[0].recv(timeout=30))["type"] != "end":
            pass
    # a client that vanishes mid-stream (no close handshake) only frees its slot
    with contextlib.suppress(ConnectionClosed, OSError), connect(url) as ws:
        ws.send(START)
        ws.recv(timeout=30)
        ws.send(np.zeros(8000, dtype="<i2").tobytes())
        ws.socket.shutdown(socket.SHUT_RDWR)
        ws.socket.close()
    deadline = time.monotonic() + 20
    while health(base)["streams"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert health(base)["streams"] == 0
    with connect(url) as ws:  # and the server still serves
        ws.send(START)
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"


def test_the_microphone_client_says_clearly_when_there_is_none(server) -> None:
    url, _ = server
    try:
        import sounddevice as sd

        sd.query_devices(kind="input")
    except Exception:  # noqa: BLE001 (no PortAudio: OSError; no device: PortAudioError)
        pass
    else:
        pytest.skip("this machine has a sound input device: the error case cannot be shown")
    with pytest.raises(StreamClientError, match="no usable microphone"):
        stream_microphone(url, seconds=0.5, out=None)


def test_asr_transcribe_streams_a_file_and_prints_the_finals(server, librispeech_root) -> None:
    """``asr-transcribe --stream FILE --server URL``: the command's last lines are the finals the
    server sends for that file; no server at a URL is a one-line error, exit status 1."""
    import subprocess

    from tests.support import BIN

    url, _ = server
    utterance = shortest_utterances(librispeech_root)[1]
    expected = [
        m["text"]
        for m in stream_file(utterance.path, url, speed=0.0, out=None)
        if m["type"] == "final"
    ]
    command = [str(BIN / "asr-transcribe"), "--stream", str(utterance.path), "--server", url]
    result = subprocess.run(
        [*command, "--speed", "0"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    printed = [line.strip() for line in result.stdout.replace("\r", "\n").splitlines()]
    finals = [line for line in printed if line.startswith("[")]  # "[start-end] text"
    assert all(any(line.endswith(text) for line in finals) for text in expected if text), (
        expected,
        result.stdout,
    )
    unused = f"ws://127.0.0.1:{_free_port()}/stream"
    result = subprocess.run(
        [*command[:-1], unused], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1 and "transcribe:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
