"""Streaming recognition: audio chunks in, partial and final transcripts out, as audio arrives.

:class:`StreamingRecognizer` is built once from a model bundle (what ``Recognizer`` is built
from: features, statistics, network, units, beam search) and shared by any number of streams;
:meth:`StreamingRecognizer.open_stream` gives a :class:`RecognitionStream` per audio source,
with its own state: the features' buffer and running mean (:mod:`.features`), the network's
carried state (``StreamingGRUModel.stream``) and the current segment (:mod:`.segment`).

Only networks with a bounded look-ahead stream (the ``streaming`` preset): the others need the
whole utterance and are refused with a message that says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

from asr_pipeline.audio.features import FeatureConfig, NormalisationStats
from asr_pipeline.common.settings import dataclass_from_params
from asr_pipeline.model.bundle import bundle_units
from asr_pipeline.model.factory import build_acoustic_model, model_config_from_dict
from asr_pipeline.streaming.features import StreamingFeatures
from asr_pipeline.streaming.search import StreamingBeamSearch
from asr_pipeline.streaming.segment import Segment


@dataclass(frozen=True)
class StreamingSettings:
    """``streaming.recognizer`` in ``conf/base/parameters_streaming.yml`` (its one source)."""

    endpoint_silence_s: float
    max_segment_s: float
    partial_interval_s: float
    mean_warmup_s: float
    beam_search: bool

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> StreamingSettings:
        return dataclass_from_params(cls, "streaming.recognizer", params)


@dataclass(frozen=True)
class Result:
    """A transcript of one segment: ``partial`` (may still change) or ``final``; seconds from
    the start of the stream."""

    type: Literal["partial", "final"]
    text: str
    start: float
    end: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StreamingRecognizer:
    """A streaming model's features, network, units and beam search, shared by its streams."""

    def __init__(
        self, bundle: dict[str, Any], settings: StreamingSettings, threads: int | None = None
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.settings = settings
        self.units = bundle_units(bundle)
        self.feature_config = FeatureConfig(**bundle["feature_config"])
        self.stats = NormalisationStats(**bundle["normalisation"])
        config = model_config_from_dict(bundle["model_config"])
        self.model = build_acoustic_model(config)
        if not hasattr(self.model, "stream"):
            raise ValueError(
                f"a {config.ARCHITECTURE} model needs the whole utterance and cannot stream: "
                "train the `streaming` preset (training.preset=streaming)"
            )
        hop_ms = 1000 * self.feature_config.hop_length / self.feature_config.sample_rate
        if abs(hop_ms - config.frame_ms) > 1e-6:
            raise ValueError(
                f"the model's frame_ms ({config.frame_ms}) is not its features' hop ({hop_ms} ms)"
            )
        self.model.load_state_dict(bundle["state_dict"])
        self.model.eval()
        self.frame_s = config.time_stride * hop_ms / 1000
        self.lookahead_ms = config.lookahead_ms
        decoder = bundle.get("decoder")
        self.beam = (
            StreamingBeamSearch(decoder, self.units) if decoder and settings.beam_search else None
        )

    @property
    def sample_rate(self) -> int:
        return self.feature_config.sample_rate

    def open_stream(self) -> RecognitionStream:
        return RecognitionStream(self)

    def transcribe(self, signal: torch.Tensor, chunk_samples: int = 1600) -> list[Result]:
        """The finals of a whole signal streamed in chunks (what a stream would say)."""
        stream = self.open_stream()
        results: list[Result] = []
        for i in range(0, len(signal), chunk_samples):
            results += stream.accept(signal[i : i + chunk_samples])
        return [r for r in results + stream.finish() if r.type == "final"]


def pcm16_to_float(data: bytes) -> torch.Tensor:
    """Little-endian signed 16-bit PCM -> float32 in [-1, 1); an odd length is refused."""
    if len(data) % 2:
        raise ValueError(f"16-bit PCM needs an even number of bytes, got {len(data)}")
    return torch.from_numpy(np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0)


class RecognitionStream:
    """One audio source's recognition: feed chunks of any size, read results as they come."""

    def __init__(self, recognizer: StreamingRecognizer) -> None:
        self.recognizer = recognizer
        settings = recognizer.settings
        frames_per_s = recognizer.sample_rate / recognizer.feature_config.hop_length
        self.features = StreamingFeatures(
            recognizer.feature_config,
            recognizer.stats,
            warmup_frames=round(settings.mean_warmup_s * frames_per_s),
        )
        self.state = recognizer.model.initial_state()
        self.segment = Segment(recognizer.units, recognizer.beam, start_frame=0)
        self._endpoint_frames = max(1, round(settings.endpoint_silence_s / recognizer.frame_s))
        self._max_frames = max(1, round(settings.max_segment_s / recognizer.frame_s))
        self._partial_frames = max(1, int(settings.partial_interval_s / recognizer.frame_s))
        self._partial_text = ""
        self._partial_frame = 0
        self.finished = False

    @property
    def seconds_received(self) -> float:
        return self.features.samples / self.recognizer.sample_rate

    def accept_pcm16(self, data: bytes) -> list[Result]:
        return self.accept(pcm16_to_float(data))

    def accept(self, samples: torch.Tensor | np.ndarray | Sequence[float]) -> list[Result]:
        """Mono float samples at the model's rate -> the results they complete (maybe none)."""
        if self.finished:
            raise RuntimeError("the stream has ended")
        samples = torch.as_tensor(np.asarray(samples, dtype=np.float32))
        with torch.inference_mode():
            features = self.features.accept(samples)
            log_probs = self.recognizer.model.stream(features, self.state)
        return self._consume(log_probs)

    def finish(self) -> list[Result]:
        """The end of the stream: its last frames, and the final of the last segment."""
        if self.finished:
            raise RuntimeError("the stream has ended")
        with torch.inference_mode():
            features = self.features.finish()
            log_probs = self.recognizer.model.stream(features, self.state, final=True)
        results = self._consume(log_probs)
        self.finished = True
        if self.segment.has_speech:
            results.append(self._final())
        else:
            self.segment.abandon()
        return results

    def _consume(self, log_probs: torch.Tensor) -> list[Result]:
        """Frame by frame into the segment, ending it at each endpoint, with a partial whenever
        ``partial_interval_s`` of audio has passed (within a chunk too: a client may send long
        chunks) and at the end of the chunk when the text changed."""
        results: list[Result] = []
        while len(log_probs):
            room = min(self._max_frames - self.segment.frames, max(1, self._frames_to_partial()))
            take = self._frames_to_endpoint(log_probs[:room])
            self.segment.add(log_probs[:take])
            log_probs = log_probs[take:]
            if self._at_endpoint():
                if self.segment.has_speech:
                    results.append(self._final())
                else:  # silence only: start afresh without saying anything
                    self.segment.abandon()
                    self._new_segment()
            elif len(log_probs) and self._frames_to_partial() == 0:
                results += self._partial(due=True)
        if self.segment.frames:
            results += self._partial(due=self._frames_to_partial() == 0)
        return results

    def _frames_to_partial(self) -> int:
        """Frames of audio until the next partial is due (0: due now; none before speech)."""
        if not self.segment.has_speech:
            return self._partial_frames
        elapsed = self.segment.end_frame - self._partial_frame
        return max(0, self._partial_frames - elapsed)

    def _frames_to_endpoint(self, log_probs: torch.Tensor) -> int:
        """How many of ``log_probs``'s frames to add before the segment's next endpoint."""
        blanks = self.segment.trailing_blanks()
        for i, token in enumerate(log_probs.argmax(dim=-1).tolist()):
            blanks = blanks + 1 if token == 0 else 0
            if blanks >= self._endpoint_frames:
                return i + 1
        return len(log_probs)

    def _at_endpoint(self) -> bool:
        segment = self.segment
        return segment.frames >= self._max_frames or (
            segment.frames > 0 and segment.trailing_blanks() >= self._endpoint_frames
        )

    def _partial(self, due: bool) -> list[Result]:
        """The greedy text, when it changed or a partial is ``due``; none while it is empty."""
        text = self.segment.greedy_text()
        if not text or (text == self._partial_text and not due):
            return []
        self._partial_text, self._partial_frame = text, self.segment.end_frame
        return [self._result("partial", text, self.segment.end_frame)]

    def _final(self) -> Result:
        segment = self.segment
        result = self._result(
            "final", segment.final_text(), segment.start_frame + segment.last_token_frame + 1
        )
        self._new_segment()
        return result

    def _new_segment(self) -> None:
        self.segment = Segment(
            self.recognizer.units, self.recognizer.beam, start_frame=self.segment.end_frame
        )
        self._partial_text = ""
        self._partial_frame = self.segment.start_frame

    def _result(self, kind: Literal["partial", "final"], text: str, end_frame: int) -> Result:
        frame_s = self.recognizer.frame_s
        start = self.segment.start_frame * frame_s
        return Result(kind, text, round(start, 3), round(end_frame * frame_s, 3))
