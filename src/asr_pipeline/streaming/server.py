"""A WebSocket server of a streaming recognizer (Starlette, run by uvicorn), and its web page.

Protocol, on ``ws://HOST:PORT/stream``, one stream per connection:

1. the client sends ``{"type": "start", "sample_rate": 16000}`` (any rate the project resamples
   from; the audio is resampled to the model's) and gets ``{"type": "ready", ...}``;
2. then binary messages of mono little-endian 16-bit PCM, of any length (whole samples);
3. the server answers ``{"type": "partial"|"final", "text", "start", "end"}`` (seconds from the
   start of the stream) as the audio is recognized;
4. ``{"type": "end"}`` from the client ends the stream: the last final, then ``{"type": "end"}``
   and the server closes the connection.

Anything wrong with a stream gets ``{"type": "error", "message": ...}`` on that stream and a
close; the other streams go on: a missing or unusable sample rate, an odd number of bytes,
encoded audio (WAV/FLAC/MP3/Ogg headers) or text instead of PCM, a stream over
``max_stream_s``, a client silent for ``idle_timeout_s``, a stream beyond ``max_streams``. A
client that disappears only frees its slot. The networks run in ``worker_threads`` threads
(torch releases the GIL), so the event loop keeps reading and writing every connection.

``GET /`` is a page that streams the browser's microphone (an AudioWorklet sends PCM).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import torch
from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from asr_pipeline.common.settings import dataclass_from_params
from asr_pipeline.streaming.recognizer import RecognitionStream, StreamingRecognizer, pcm16_to_float
from asr_pipeline.streaming.resample import StreamResampler, check_rate

STATIC = Path(__file__).with_name("static")
# first bytes of encoded audio a client might send instead of raw PCM
ENCODED_AUDIO = {b"RIFF": "WAV", b"fLaC": "FLAC", b"OggS": "Ogg", b"ID3": "MP3"}
POLICY_VIOLATION, TRY_AGAIN_LATER = 1008, 1013


@dataclass(frozen=True)
class ServerSettings:
    """``streaming.server`` in ``conf/base/parameters_streaming.yml`` (its one source)."""

    host: str
    port: int
    max_streams: int
    max_stream_s: float
    worker_threads: int
    idle_timeout_s: float

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ServerSettings:
        return dataclass_from_params(cls, "streaming.server", params)


class StreamError(Exception):
    """What is wrong with a stream, said to its client before closing it."""


def create_app(recognizer: StreamingRecognizer, settings: ServerSettings) -> Starlette:
    """The server's application: ``/stream`` (WebSocket), ``/`` (the page), ``/health``."""
    limiter = anyio.CapacityLimiter(settings.worker_threads)
    active = {"streams": 0}

    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        if active["streams"] >= settings.max_streams:
            message = f"server busy: {settings.max_streams} streams at most, try again later"
            await _close_with_error(websocket, message, TRY_AGAIN_LATER)
            return
        active["streams"] += 1
        try:
            await Session(websocket, recognizer, settings, limiter).run()
        except WebSocketDisconnect:
            pass  # the client went away: its stream is dropped, its slot freed
        except StreamError as error:
            await _close_with_error(websocket, str(error), POLICY_VIOLATION)
        finally:
            active["streams"] -= 1

    async def health(_request: Any) -> JSONResponse:
        return JSONResponse(
            {
                "streams": active["streams"],
                "max_streams": settings.max_streams,
                "sample_rate": recognizer.sample_rate,
                "lookahead_ms": recognizer.lookahead_ms,
            }
        )

    async def page(_request: Any) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    routes = [
        Route("/", page),
        Route("/health", health),
        WebSocketRoute("/stream", stream),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)


async def _close_with_error(websocket: WebSocket, message: str, code: int) -> None:
    try:
        await websocket.send_json({"type": "error", "message": message})
        await websocket.close(code=code, reason=message[:120])
    except (WebSocketDisconnect, RuntimeError):
        pass  # already gone


class Session:
    """One connection's stream: the start message, then PCM until the end."""

    def __init__(
        self,
        websocket: WebSocket,
        recognizer: StreamingRecognizer,
        settings: ServerSettings,
        limiter: anyio.CapacityLimiter,
    ) -> None:
        self.websocket = websocket
        self.recognizer = recognizer
        self.settings = settings
        self.limiter = limiter
        self.stream: RecognitionStream | None = None
        self.resampler: StreamResampler | None = None
        self.samples_in = 0
        self.sample_rate = 0

    async def receive(self) -> dict[str, Any]:
        try:
            message = await asyncio.wait_for(
                self.websocket.receive(), timeout=self.settings.idle_timeout_s
            )
        except TimeoutError:
            raise StreamError(f"nothing received for {self.settings.idle_timeout_s:g} s") from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        return message

    async def run(self) -> None:
        self.start(await self.receive())
        await self.websocket.send_json(
            {
                "type": "ready",
                "sample_rate": self.sample_rate,
                "model_sample_rate": self.recognizer.sample_rate,
                "max_stream_s": self.settings.max_stream_s,
            }
        )
        while True:
            message = await self.receive()
            if message.get("bytes") is not None:
                await self.send(await self.run_model(self.audio, message["bytes"]))
            elif _control(message.get("text")) == "end":
                await self.send(await self.run_model(self.finish))
                await self.websocket.send_json({"type": "end"})
                await self.websocket.close()
                return

    def start(self, message: dict[str, Any]) -> None:
        if message.get("text") is None:
            raise StreamError(
                'start with a text message {"type": "start", "sample_rate": N}, then send PCM'
            )
        try:
            start = json.loads(message["text"])
        except json.JSONDecodeError:
            raise StreamError("the start message is not JSON") from None
        if not isinstance(start, dict) or start.get("type") != "start":
            raise StreamError('the first message must be {"type": "start", "sample_rate": N}')
        if "sample_rate" not in start:
            raise StreamError("the start message must declare the audio's sample_rate (Hz)")
        try:
            self.sample_rate = check_rate(start["sample_rate"], self.recognizer.sample_rate)
        except ValueError as error:
            raise StreamError(str(error)) from None
        if self.sample_rate != self.recognizer.sample_rate:
            self.resampler = StreamResampler(self.sample_rate, self.recognizer.sample_rate)
        self.stream = self.recognizer.open_stream()

    def audio(self, data: bytes) -> list[dict[str, Any]]:
        """PCM bytes -> results (in a worker thread)."""
        if self.samples_in == 0:
            for magic, name in ENCODED_AUDIO.items():
                if data.startswith(magic):
                    raise StreamError(f"this is a {name} file: send raw 16-bit PCM samples")
        try:
            samples = pcm16_to_float(data)
        except ValueError as error:
            raise StreamError(str(error)) from None
        self.samples_in += len(samples)
        if self.samples_in > self.settings.max_stream_s * self.sample_rate:
            raise StreamError(
                f"the stream is longer than the {self.settings.max_stream_s:g} s limit"
            )
        if self.resampler is not None:
            samples = self.resampler.accept(samples)
        return [r.to_dict() for r in self.stream.accept(samples)]

    def finish(self) -> list[dict[str, Any]]:
        results = []
        if self.resampler is not None:
            results = self.stream.accept(self.resampler.finish())
        return [r.to_dict() for r in results + self.stream.finish()]

    async def run_model(self, work: Any, *args: Any) -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(_single_threaded, work, *args, limiter=self.limiter)

    async def send(self, results: list[dict[str, Any]]) -> None:
        for result in results:
            await self.websocket.send_json(result)


def _single_threaded(work: Any, *args: Any) -> Any:
    """Each worker thread runs torch on one core: streams run side by side, not a stream on
    several cores (small GRUs are slower with more threads when others compete)."""
    torch.set_num_threads(1)
    return work(*args)


def _control(text: str | None) -> str:
    """The type of a client's text message; only ``end`` is valid after the start."""
    try:
        message = json.loads(text or "")
    except json.JSONDecodeError:
        raise StreamError("text messages must be JSON; send audio as binary PCM") from None
    if not isinstance(message, dict) or message.get("type") != "end":
        raise StreamError('after the start, send binary PCM, or {"type": "end"} to finish')
    return "end"
