"""A small streaming model trained in seconds on real audio, for the streaming tests.

It overfits the four shortest train-clean-100 utterances of the shared sample (about 2 s each,
and two of them joined by a pause), so that it says real words on them and "the streamed text
equals the offline text" means something (a random network's output is mostly blank). Trained
once per test process (``functools.cache``), on features computed as the feature pipeline does.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

from asr_pipeline.audio.features import (
    FeatureConfig,
    FeatureExtractor,
    RunningStats,
    remove_utterance_mean,
)
from asr_pipeline.audio.loading import load_audio
from asr_pipeline.model.bundle import make_bundle
from asr_pipeline.model.factory import build_acoustic_model, model_config_from_dict
from asr_pipeline.units.characters import CharacterUnits, normalise
from tests.support import PROJECT_ROOT, free_port, project_params

FEATURES = FeatureConfig.from_params(project_params("feature_engineering")["features"])
PRESET = project_params("training")["training"]["presets"]["streaming"]
STREAMING_PARAMS = project_params("streaming")["streaming"]
SIZES = {"cnn_channels": 8, "rnn_dim": 96, "n_rnn_layers": 2, "dropout": 0.0}


@dataclass(frozen=True)
class Utterance:
    path: Path
    text: str


def shortest_utterances(librispeech_root: Path, n: int = 4) -> list[Utterance]:
    files = sorted((librispeech_root / "train-clean-100").glob("*/*/*.flac"))
    chosen = sorted((sf.info(str(f)).duration, f.name, f) for f in files)[:n]
    utterances = []
    for _, _, path in chosen:
        lines = next(path.parent.glob("*.trans.txt")).read_text().splitlines()
        text = dict(line.split(" ", 1) for line in lines)[path.stem]
        utterances.append(Utterance(path, normalise(text)[0]))
    return utterances


def pause_signal(seed: int, seconds: float = 1.5) -> torch.Tensor:
    """A pause: ``seconds`` of faint noise (a real pause is never digital silence)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(int(seconds * FEATURES.sample_rate), generator=generator) * 1e-4


@functools.cache
def trained_bundle(librispeech_root: Path, utterance_mean: bool = True) -> dict[str, Any]:
    """The streaming preset, made small, overfitted on :func:`shortest_utterances`."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    utterances = shortest_utterances(librispeech_root)
    extractor, units = FeatureExtractor(FEATURES), CharacterUnits()
    signals = [load_audio(u.path, FEATURES.sample_rate) for u in utterances]
    texts = [u.text for u in utterances]
    # and two of them with a pause between: a model that never heard a pause may say anything
    # in one (its recurrent state runs on), and then no pause would end a segment
    signals.append(torch.cat([signals[1], pause_signal(seed=1), signals[2]]))
    texts.append(f"{texts[1]} {texts[2]}")
    raw = [extractor(signal).to(torch.float16).float() for signal in signals]
    running = RunningStats(FEATURES.n_features)
    for features in raw:
        running.update(remove_utterance_mean(features) if utterance_mean else features)
    stats = running.result(utterance_mean)
    feats = [stats.apply(f) for f in raw]
    lengths = torch.tensor([f.shape[1] for f in feats])
    batch = torch.zeros(len(feats), FEATURES.n_features, int(lengths.max()))
    for i, f in enumerate(feats):
        batch[i, :, : f.shape[1]] = f
    targets = [torch.tensor(units.encode(text)) for text in texts]
    config = model_config_from_dict({**PRESET, **SIZES, "n_features": FEATURES.n_features})
    model = build_acoustic_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(250):
        log_probs, out_lengths = model(batch, lengths)
        loss = torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1),
            torch.cat(targets),
            out_lengths,
            torch.tensor([len(t) for t in targets]),
            zero_infinity=True,
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return make_bundle(config, model.state_dict(), FEATURES, stats, {"loss": loss.item()})


@contextlib.contextmanager
def running_server(model: Path, max_streams: int, max_stream_s: float) -> Iterator[tuple[str, str]]:
    """``asr-stream-server`` (as ``python -m``) on a free port: (WebSocket URL, HTTP base)."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT / "src")}
    args = [sys.executable, "-m", "asr_pipeline.serving.stream_server", "--model", str(model)]
    limits = ["--port", str(port), "--max-streams", str(max_streams)]
    # the server's log goes to a file, not a pipe: a pipe nobody reads fills up and blocks it
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(
            [*args, *limits, "--max-stream-s", str(max_stream_s)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        try:
            while True:
                try:
                    urllib.request.urlopen(base + "/health", timeout=2).read()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        process.kill()
                        process.wait(timeout=20)
                        log.seek(0)
                        raise RuntimeError(
                            f"the server did not start:\n{log.read()[-3000:]}"
                        ) from None
                    time.sleep(0.5)
            yield f"ws://127.0.0.1:{port}/stream", base
        finally:
            process.terminate()
            process.wait(timeout=20)
