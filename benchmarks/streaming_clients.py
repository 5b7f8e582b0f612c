"""The client side of benchmarks/streaming.py: streams played at a pace through the real server,
what came back when, and the latency measures taken from that (pooled into p50/p95)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def stream_one(url: str, pcm: np.ndarray, rate: int, chunk_s: float, speed: float) -> dict:
    """One utterance on one connection: when each chunk was sent, what came back and when."""
    from websockets.asyncio.client import connect

    chunk, sent, received = max(1, int(chunk_s * rate)), [], []
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": rate}))
        if (ready := json.loads(await ws.recv()))["type"] != "ready":
            raise RuntimeError(f"the server refused the stream: {ready}")

        async def read() -> None:
            async for raw in ws:
                received.append((time.perf_counter(), message := json.loads(raw)))
                if message["type"] == "error":
                    raise RuntimeError(f"the server said: {message['message']}")
                if message["type"] == "end":
                    return

        reader = asyncio.create_task(read())
        began = time.perf_counter()
        for i in range(0, len(pcm), chunk):
            piece = pcm[i : i + chunk]
            if speed > 0:  # a chunk goes once its audio has been spoken
                due = began + (i + len(piece)) / rate / speed
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await ws.send(piece.tobytes())
            sent.append(time.perf_counter())
        await ws.send(json.dumps({"type": "end"}))
        await reader
    return {"began": began, "sent": sent, "received": received, "rate": rate, "chunk": chunk}


def measures(run: dict) -> dict:
    """Final latency, partial delays, gaps between partials of a segment (audio and wall)."""
    sent, chunk, rate = run["sent"], run["chunk"], run["rate"]
    end_at = next(t for t, m in run["received"] if m["type"] == "end")
    partials = [(t, m) for t, m in run["received"] if m["type"] == "partial"]
    # the chunk that completed the audio up to a partial's end
    holding = [min(len(sent), max(1, -(-round(m["end"] * rate) // chunk))) - 1 for _, m in partials]
    pairs = [(a, b) for a, b in itertools.pairwise(partials) if a[1]["start"] == b[1]["start"]]
    return {
        "text": " ".join(m["text"] for _, m in run["received"] if m["type"] == "final"),
        "final_latency_s": end_at - sent[-1],
        "processing_s": end_at - run["began"],
        "first_partial_s": [partials[0][0] - run["began"]] if partials else [],
        "partial_delay_s": [t - sent[k] for (t, _), k in zip(partials, holding, strict=True)],
        "partial_gap_audio_s": [b[1]["end"] - a[1]["end"] for a, b in pairs],
        "partial_gap_wall_s": [b[0] - a[0] for a, b in pairs],
    }


def quantiles(values: list[float]) -> dict:
    p50, p95 = np.percentile(values, [50, 95]).round(4).tolist() if values else (None, None)
    return {"p50": p50, "p95": p95, "n": len(values)}


async def concurrent(url: str, audio: list, streams: int, args) -> list[dict]:
    """``streams`` streams at once, each playing utterances (from its own offset in the list)
    one connection after another until it has played ``seconds_per_stream`` of audio."""

    async def one(j: int) -> list[dict]:
        await asyncio.sleep(j * args.chunk_s / streams)
        runs, k, played = [], j * len(audio) // streams, 0.0
        while played < args.seconds_per_stream:
            pcm, rate = audio[k % len(audio)]
            runs.append(measures(await stream_one(url, pcm, rate, args.chunk_s, args.speed)))
            played, k = played + len(pcm) / rate, k + 1
        return runs

    return [run for runs in await asyncio.gather(*(one(j) for j in range(streams))) for run in runs]


def level(runs: list[dict], server_cpu_s: float, wall_s: float) -> dict:
    pooled = ("partial_delay_s", "first_partial_s", "partial_gap_audio_s", "partial_gap_wall_s")
    return {
        "utterances": len(runs),
        "final_latency_s": quantiles([r["final_latency_s"] for r in runs]),
        **{key: quantiles([v for r in runs for v in r[key]]) for key in pooled},
        "server_cpu_share": round(server_cpu_s / wall_s, 3),
    }
