"""The streaming recognizer on real LibriSpeech audio: its finals against the offline recognizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

from asr_pipeline.audio.features import NormalisationStats
from asr_pipeline.audio.loading import load_audio
from asr_pipeline.decoding.ctc import BeamSearchConfig
from asr_pipeline.decoding.language_model import build_arpa
from asr_pipeline.decoding.metrics import error_rates
from asr_pipeline.model.bundle import make_bundle, with_beam_search
from asr_pipeline.model.factory import build_acoustic_model, model_config_from_dict
from asr_pipeline.model.recognizer import Recognizer
from asr_pipeline.streaming.features import StreamingFeatures
from asr_pipeline.streaming.recognizer import (
    StreamingRecognizer,
    StreamingSettings,
    pcm16_to_float,
)
from asr_pipeline.streaming.resample import StreamResampler, check_rate
from tests.streaming_fixtures import (
    FEATURES,
    STREAMING_PARAMS,
    pause_signal,
    shortest_utterances,
    trained_bundle,
)
from tests.support import project_params

SETTINGS = StreamingSettings.from_params(STREAMING_PARAMS["recognizer"])
# no endpoint inside a 2 s utterance: one final per file, comparable with the offline text
ONE_SEGMENT = StreamingSettings.from_params(
    {**STREAMING_PARAMS["recognizer"], "endpoint_silence_s": 5.0}
)


def stream_text(recognizer: StreamingRecognizer, signal: torch.Tensor, chunk: int) -> str:
    return " ".join(r.text for r in recognizer.transcribe(signal, chunk))


@pytest.fixture(scope="module")
def signals(librispeech_root: Path) -> list[torch.Tensor]:
    return [load_audio(u.path, FEATURES.sample_rate) for u in shortest_utterances(librispeech_root)]


def test_streamed_features_are_the_offline_features(librispeech_root, signals) -> None:
    recognizer = Recognizer(trained_bundle(librispeech_root, utterance_mean=False))
    stats = recognizer.stats
    rng = np.random.default_rng(0)
    for signal in [signals[0], signals[1][:150], signals[1][:1000]]:
        offline = recognizer.features(signal)
        streaming = StreamingFeatures(FEATURES, stats, warmup_frames=1)
        pieces, i = [], 0
        while i < len(signal):  # chunks of random sizes, some smaller than a hop
            size = int(rng.integers(1, 700))
            pieces.append(streaming.accept(signal[i : i + size]))
            i += size
        streamed = torch.cat([*pieces, streaming.finish()], dim=-1)
        assert streamed.shape == offline.shape
        # equal but for float16 rounding of values computed in another order (rare, one step)
        assert (streamed - offline).abs().max() < 0.02
        assert (streamed - offline).abs().mean() < 1e-4


def test_the_running_mean_is_causal_after_the_warm_up() -> None:
    stats = NormalisationStats([0.0] * 80, [1.0] * 80, frames=1, utterance_mean=True)
    streaming = StreamingFeatures(FEATURES, stats, warmup_frames=10)
    signal = torch.randn(16000) * torch.linspace(0.01, 1.0, 16000)  # louder and louder
    first = streaming.accept(signal[:800])  # 5 frames: held back for the warm-up
    assert first.shape[-1] == 0
    rest = torch.cat([streaming.accept(signal[800:]), streaming.finish()], dim=-1)
    raw = StreamingFeatures(FEATURES, NormalisationStats([0.0] * 80, [1.0] * 80, 1), 1)
    raw = torch.cat([raw.accept(signal), raw.finish()], dim=-1)
    assert rest.shape == raw.shape
    torch.testing.assert_close(rest[:, :10], raw[:, :10] - raw[:, :10].mean(-1, keepdim=True))
    for t in (10, 50, raw.shape[-1] - 1):
        expected = raw[:, t] - raw[:, : t + 1].mean(-1)
        torch.testing.assert_close(rest[:, t], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("chunk", [160, 777, 8000])
def test_with_global_statistics_the_stream_says_what_the_offline_recognizer_says(
    librispeech_root: Path, signals, chunk: int
) -> None:
    bundle = trained_bundle(librispeech_root, utterance_mean=False)
    offline = Recognizer(bundle).transcribe(signals, "greedy")
    streaming = StreamingRecognizer(bundle, ONE_SEGMENT)
    assert [stream_text(streaming, s, chunk) for s in signals] == offline
    assert error_rates([u.text for u in shortest_utterances(librispeech_root)], offline).cer < 0.15


def test_finals_use_the_beam_search_and_lm_the_model_carries(librispeech_root, signals) -> None:
    texts = [u.text for u in shortest_utterances(librispeech_root)]
    config = BeamSearchConfig(
        beam_size=16, lm_weight=1.0, word_score=0.0, lm_order=2, background_words=0, lexicon=True
    )
    plain = trained_bundle(librispeech_root, utterance_mean=False)
    bundle = with_beam_search(plain, config, build_arpa(texts, order=2), {"split": None})
    offline = Recognizer(bundle).transcribe(signals, "beam")
    assert offline != Recognizer(bundle).transcribe(signals, "greedy")  # the LM matters here
    streaming = StreamingRecognizer(bundle, ONE_SEGMENT)
    assert [stream_text(streaming, s, 1600) for s in signals] == offline
    # partials stay greedy; beam_search: false makes finals greedy too
    greedy = StreamingRecognizer(
        bundle, StreamingSettings(**{**vars(ONE_SEGMENT), "beam_search": False})
    )
    assert [stream_text(greedy, s, 1600) for s in signals] == Recognizer(bundle).transcribe(
        signals, "greedy"
    )


def test_with_the_utterance_mean_the_stream_is_close_to_offline(librispeech_root, signals) -> None:
    # the running mean of mean_warmup_s (1 s) of 2 s utterances: the hardest case, as the
    # first frames' mean is furthest from the utterance's
    bundle = trained_bundle(librispeech_root, utterance_mean=True)
    offline = Recognizer(bundle).transcribe(signals, "greedy")
    streaming = StreamingRecognizer(bundle, ONE_SEGMENT)
    streamed = [stream_text(streaming, s, 1600) for s in signals]
    assert error_rates(offline, streamed).cer <= 0.10, list(zip(offline, streamed, strict=True))


def test_a_pause_ends_a_segment_with_a_final(librispeech_root, signals) -> None:
    bundle = trained_bundle(librispeech_root, utterance_mean=False)
    pause = pause_signal(seed=2)  # not the pause the model was trained with
    signal = torch.cat([signals[1], pause, signals[2]])
    offline = Recognizer(bundle).transcribe([signal], "greedy")[0]  # the network's state carries
    stream = StreamingRecognizer(bundle, SETTINGS).open_stream()
    results = []
    for i in range(0, len(signal), 1600):
        results += stream.accept(signal[i : i + 1600])
    before_end = [r for r in results if r.type == "final"]
    results += stream.finish()
    finals = [r for r in results if r.type == "final"]
    assert len(before_end) >= 1  # the first final came at the pause, not at the end
    assert len(finals) >= 2
    assert error_rates([offline], [" ".join(f.text for f in finals)]).cer <= 0.05
    second_starts = (len(signals[1]) + len(pause)) / FEATURES.sample_rate
    assert finals[0].end < second_starts and finals[0].end <= finals[1].start
    partials = [r for r in results if r.type == "partial"]
    assert partials and all(p.text for p in partials)
    # every partial belongs to a segment that ended with a final, and time goes forwards
    assert {p.start for p in partials} <= {f.start for f in finals}
    assert [f.start for f in finals] == sorted(f.start for f in finals)


@pytest.mark.parametrize("chunk_s", [0.1, 1.0, 4.0])
def test_partials_come_every_interval_of_audio_whatever_the_chunk(
    librispeech_root: Path, signals, chunk_s: float
) -> None:
    bundle = trained_bundle(librispeech_root, utterance_mean=False)
    recognizer = StreamingRecognizer(bundle, ONE_SEGMENT)
    interval = ONE_SEGMENT.partial_interval_s
    signal = signals[-1]
    chunk = int(chunk_s * FEATURES.sample_rate)
    stream = recognizer.open_stream()
    results = []
    for i in range(0, len(signal), chunk):
        results += stream.accept(signal[i : i + chunk])
    results += stream.finish()
    partials = [r for r in results if r.type == "partial"]
    final = results[-1]
    assert final.type == "final" and all(p.text for p in partials)
    # from the first word on, no more than the interval of audio without a partial or the final
    ends = [p.end for p in partials] + [final.end]
    gaps = np.diff(ends)
    assert len(partials) >= (final.end - partials[0].end) / interval - 1
    assert gaps.max() <= interval + 1e-6, gaps
    assert [p.end for p in partials] == sorted(p.end for p in partials)


def test_a_model_that_cannot_stream_is_refused_and_pcm_is_checked() -> None:
    preset = project_params("training")["training"]["presets"]["default"]
    config = model_config_from_dict({**preset, "n_features": FEATURES.n_features})
    stats = NormalisationStats([0.0] * 80, [1.0] * 80, frames=1)
    bundle = make_bundle(config, build_acoustic_model(config).state_dict(), FEATURES, stats, {})
    with pytest.raises(ValueError, match="cannot stream: train the `streaming` preset"):
        StreamingRecognizer(bundle, SETTINGS)
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_to_float(b"\x00\x01\x02")
    assert pcm16_to_float(np.array([-32768, 16384], dtype="<i2").tobytes()).tolist() == [-1.0, 0.5]


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_chunked_resampling_is_whole_resampling(rate: int) -> None:
    signal = torch.randn(rate + 123)
    whole = torchaudio.functional.resample(signal, rate, 16000)
    resampler, pieces, i = StreamResampler(rate, 16000), [], 0
    rng = np.random.default_rng(rate)
    while i < len(signal):
        size = int(rng.integers(1, 3000))
        pieces.append(resampler.accept(signal[i : i + size]))
        i += size
    streamed = torch.cat([*pieces, resampler.finish()])
    assert streamed.shape == whole.shape
    torch.testing.assert_close(streamed, whole, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="unsupported sample rate 44101"):
        check_rate(44101, 16000)
