"""Clients of the streaming server: a file at real-time pace, or a microphone.

    stream_file("speech.flac", "ws://127.0.0.1:8765/stream")          # as it would be spoken
    stream_file("speech.flac", url, speed=0.0)                         # as fast as it goes
    stream_microphone(url, seconds=10)                                 # needs a sound device

Partials are printed in place (one line, rewritten with a carriage return), finals on lines of
their own. Both return every message the server sent. They use ``websockets``' synchronous
client: one thread sends and reads what has arrived in between (``recv(timeout=0)``).
"""

from __future__ import annotations

import json
import queue
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import soundfile as sf
from websockets.sync.client import ClientConnection, connect

DEFAULT_URL = "ws://127.0.0.1:8765/stream"


class StreamClientError(RuntimeError):
    """The server refused the stream (its message), or there is no microphone."""


class _Printer:
    """Partials rewritten in place on one line; finals kept, one per line."""

    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.width = 0

    def show(self, message: dict[str, Any]) -> None:
        if self.out is None or message.get("type") not in {"partial", "final"}:
            return
        line = f"[{message['start']:6.2f}-{message['end']:6.2f}] {message['text']}"
        pad = " " * max(0, self.width - len(line))
        end = "\n" if message["type"] == "final" else ""
        self.out.write(f"\r{line}{pad}{end}")
        self.out.flush()
        self.width = 0 if end else len(line)


def _drain(ws: ClientConnection, printer: _Printer, results: list, wait: float = 0.0) -> None:
    """Read what the server has sent (waiting up to ``wait`` s for the first message)."""
    timeout = wait
    while True:
        try:
            message = json.loads(ws.recv(timeout=timeout))
        except TimeoutError:
            return
        timeout = 0.0
        results.append(message)
        printer.show(message)
        if message.get("type") == "error":
            raise StreamClientError(message["message"])
        if message.get("type") == "end":  # the server closes the connection after it
            return


def _start(ws: ClientConnection, sample_rate: int) -> None:
    ws.send(json.dumps({"type": "start", "sample_rate": sample_rate}))
    ready = json.loads(ws.recv(timeout=30))
    if ready.get("type") != "ready":
        raise StreamClientError(ready.get("message", f"unexpected answer {ready}"))


def _finish(ws: ClientConnection, printer: _Printer, results: list) -> list[dict[str, Any]]:
    ws.send(json.dumps({"type": "end"}))
    while not results or results[-1].get("type") != "end":
        _drain(ws, printer, results, wait=30.0)
    return results


def stream_file(
    path: str | Path,
    url: str = DEFAULT_URL,
    speed: float = 1.0,
    chunk_s: float = 0.1,
    out: TextIO | None = sys.stdout,
) -> list[dict[str, Any]]:
    """Stream an audio file (any format soundfile reads, at its own rate) to the server.

    ``speed`` 1.0 sends it at real-time pace, 2.0 twice as fast, 0 as fast as possible. Returns
    the server's messages (``partial``, ``final``, ... ``end``); a refusal raises
    :class:`StreamClientError` with the server's message.
    """
    samples, rate = sf.read(str(path), dtype="int16", always_2d=True)
    pcm = samples.mean(axis=1).astype("<i2") if samples.shape[1] > 1 else samples[:, 0]
    pcm = pcm.astype("<i2")
    chunk = max(1, int(chunk_s * rate))
    printer, results = _Printer(out), []
    with connect(url, max_size=None) as ws:
        _start(ws, rate)
        began = time.monotonic()
        for i in range(0, len(pcm), chunk):
            ws.send(pcm[i : i + chunk].tobytes())
            if speed > 0:  # wait until this chunk's audio would have been spoken
                due = began + (i + chunk) / rate / speed
                _drain(ws, printer, results, wait=max(0.0, due - time.monotonic()))
                time.sleep(max(0.0, due - time.monotonic()))
            else:
                _drain(ws, printer, results)
        return _finish(ws, printer, results)


def stream_microphone(
    url: str = DEFAULT_URL,
    seconds: float | None = None,
    sample_rate: int = 16000,
    device: int | str | None = None,
    out: TextIO | None = sys.stdout,
) -> list[dict[str, Any]]:
    """Stream the microphone (``sounddevice``) until ``seconds`` have passed or Ctrl+C."""
    try:
        import sounddevice as sd

        sd.check_input_settings(device=device, samplerate=sample_rate, channels=1, dtype="int16")
    except (OSError, ValueError) as error:  # no PortAudio, no input device, unsupported rate
        raise StreamClientError(f"no usable microphone: {error}") from error
    blocks: queue.Queue[bytes] = queue.Queue()
    printer, results = _Printer(out), []
    with connect(url, max_size=None) as ws:
        _start(ws, sample_rate)
        with sd.InputStream(
            samplerate=sample_rate,
            channels=1,
            dtype="int16",
            device=device,
            blocksize=sample_rate // 10,
            callback=lambda data, *_: blocks.put(bytes(np.ascontiguousarray(data))),
        ):
            began = time.monotonic()
            try:
                while seconds is None or time.monotonic() - began < seconds:
                    try:
                        ws.send(blocks.get(timeout=0.5))
                    except queue.Empty:
                        continue
                    _drain(ws, printer, results)
            except KeyboardInterrupt:
                pass
        return _finish(ws, printer, results)
