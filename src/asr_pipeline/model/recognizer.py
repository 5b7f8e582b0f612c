"""A trained recognizer: audio in, text out, with the features and statistics it was trained on.

It is built from a model bundle (:mod:`asr_pipeline.model.bundle`), so that training, evaluation,
``asr-transcribe`` and the served model all compute features, run the network and decode alike,
with the units the model was trained with (``units``): greedy decoding spells them, the beam
search spells its LM's words in them, so its output is words whatever the units.

Long recordings are cut at pauses (:mod:`asr_pipeline.audio.segmentation`) and the model runs one
segment at a time, so memory stays flat for hours of audio and no word is split between two
segments. :meth:`Recognizer.transcribe_one` also gives each word's start and end in the recording
(:mod:`asr_pipeline.decoding.alignment`) and the cut points.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor, NormalisationStats
from asr_pipeline.audio.loading import load_audio
from asr_pipeline.audio.segmentation import (
    DEFAULT_SEGMENTATION,
    SegmentationConfig,
    segment_bounds,
)
from asr_pipeline.decoding.alignment import WordTiming, align_words, frame_seconds
from asr_pipeline.decoding.compressed_arpa import CompressedArpa
from asr_pipeline.decoding.ctc import BeamSearchConfig, BeamSearchDecoder, greedy_decode
from asr_pipeline.model.bundle import bundle_lm, bundle_units
from asr_pipeline.model.factory import build_acoustic_model, model_config_from_dict

DECODER_NAMES = ("auto", "beam", "greedy")
Decoder = Callable[[torch.Tensor, torch.Tensor], list[str]]
NO_WORDS = (
    "greedy decoding of a phone model gives phones, and this model carries no beam search to "
    "give words"
)


@dataclass
class Transcription:
    """One recording's text, its words with their times (seconds from the recording's start;
    None where they could not be aligned, ``note`` says why) and where it was cut (seconds)."""

    text: str
    words: list[WordTiming] = field(default_factory=list)
    cuts: list[float] = field(default_factory=list)
    note: str = ""

    def word_dicts(self) -> list[dict]:
        """The words as ``{"word", "start", "end"}`` (what JSON results and the server give)."""
        return [word.to_dict() for word in self.words]


class Recognizer:
    """Feature extraction, normalisation, acoustic model and a decoder, as one object."""

    def __init__(self, bundle: dict[str, Any], threads: int | None = None) -> None:
        self.units = bundle_units(bundle)  # checks the format
        if threads:
            torch.set_num_threads(threads)
        self.feature_config = FeatureConfig(**bundle["feature_config"])
        self.extractor = FeatureExtractor(self.feature_config)
        self.stats = NormalisationStats(**bundle["normalisation"])
        self.model = build_acoustic_model(model_config_from_dict(bundle["model_config"]))
        self.model.load_state_dict(bundle["state_dict"])
        self.model.eval()
        self.info = bundle.get("info", {})
        self.beam_search = bundle.get("decoder")  # None: the model carries no LM
        self._decoders: dict[str, Decoder] = {"greedy": partial(greedy_decode, units=self.units)}
        # seconds per output frame: the feature hop times the model's time subsampling
        frames = 100_000
        out = int(self.model.output_lengths(torch.tensor([frames]))[0])
        self.frame_seconds = frame_seconds(
            self.feature_config.hop_length, self.sample_rate, frames, out
        )

    @classmethod
    def from_file(cls, path: str | Path, threads: int | None = None) -> Recognizer:
        return cls(torch.load(path, weights_only=True, map_location="cpu"), threads)

    @property
    def sample_rate(self) -> int:
        return self.feature_config.sample_rate

    def decoder_name(self, name: str = "auto") -> str:
        """``greedy`` or ``beam``: ``auto`` is beam when the model carries an LM, else greedy."""
        if name not in DECODER_NAMES:
            raise ValueError(f"unknown decoder {name!r}: use one of {', '.join(DECODER_NAMES)}")
        if name == "auto":
            return "beam" if self.beam_search else "greedy"
        return name

    def gives_words(self, name: str = "auto") -> bool:
        """Whether decoder ``name`` gives words: the beam search always (it spells its LM's
        words), greedy decoding unless the units are phones (then it gives phones)."""
        return self.decoder_name(name) == "beam" or self.units.greedy_gives_words

    def words_decoder_name(self, name: str = "auto") -> str | None:
        """The decoder whose output gives the words (to time) of decoder ``name``'s text: itself
        when it gives words, else (a phone model's greedy decoding) the beam search when the
        model carries one, else None."""
        name = self.decoder_name(name)
        if self.gives_words(name):
            return name
        return "beam" if self.beam_search else None

    def decoder(self, name: str = "auto") -> Decoder:
        """``greedy``, ``beam`` (the model's own LM and tuned settings), or ``auto``: the beam
        search when the model carries one, else greedy. Built once, on first use."""
        name = self.decoder_name(name)
        if name == "beam" and name not in self._decoders:
            if not self.beam_search:
                raise ValueError(
                    "this model carries no language model for a beam search (it was saved before "
                    "models carried one): decode it with greedy"
                )
            config = BeamSearchConfig(**self.beam_search["beam"])
            self._decoders["beam"] = self.beam_search_decoder(config, bundle_lm(self.beam_search))
        return self._decoders[name]

    def beam_search_decoder(
        self, config: BeamSearchConfig, lm_arpa: CompressedArpa | str
    ) -> BeamSearchDecoder:
        """A beam search over the ARPA LM ``lm_arpa`` that spells its words in this model's units
        (the one way to build one: tuning and decoding must never disagree on the units)."""
        return BeamSearchDecoder.from_arpa(config, lm_arpa, self.units)

    def features(self, signal: torch.Tensor) -> torch.Tensor:
        """Normalised ``(n_features, frames)`` features of a mono signal at the model's rate."""
        if len(signal) <= self.feature_config.n_fft // 2:  # too short for the STFT's padding
            signal = torch.nn.functional.pad(signal, (0, self.feature_config.n_fft - len(signal)))
        # float16 round trip: the features the model was trained on were stored as float16
        return self.stats.apply(self.extractor(signal).to(torch.float16).float())

    @torch.inference_mode()
    def log_probs(self, signals: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC log-probabilities ``(B, T', C)`` and output lengths of a batch of signals."""
        feats = [self.features(s) for s in signals]
        lengths = torch.tensor([f.shape[1] for f in feats])
        padded = torch.zeros(len(feats), feats[0].shape[0], int(lengths.max()))
        for i, f in enumerate(feats):
            padded[i, :, : f.shape[1]] = f
        return self.model(padded, lengths)

    def _segments(
        self, signal: torch.Tensor, segmentation: SegmentationConfig | None
    ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """``(first sample, end sample, log-probs, lengths)`` of each segment, one at a time:
        only one segment's features and activations are ever held, whatever the length."""
        config = segmentation or DEFAULT_SEGMENTATION
        for start, end in segment_bounds(signal, self.sample_rate, config):
            log_probs, lengths = self.log_probs([signal[start:end]])
            yield start, end, log_probs, lengths

    def transcribe(
        self,
        signals: Sequence[torch.Tensor],
        decoder: Decoder | str = "auto",
        segmentation: SegmentationConfig | None = None,
    ) -> list[str]:
        """Text of each signal; long signals are cut at pauses (``segmentation``, default
        conf/base's) so memory stays bounded.

        ``decoder`` is a decoding function or the name of one of :meth:`decoder`.
        """
        decode = self.decoder(decoder) if isinstance(decoder, str) else decoder
        texts = []
        for signal in signals:
            pieces = [
                decode(lp, lengths)[0] for _, _, lp, lengths in self._segments(signal, segmentation)
            ]
            texts.append(" ".join(piece for piece in pieces if piece))
        return texts

    def transcribe_one(
        self,
        signal: torch.Tensor,
        decoder: str = "auto",
        segmentation: SegmentationConfig | None = None,
        with_words: bool = True,
    ) -> Transcription:
        """One recording's :class:`Transcription`: text, cut points and (``with_words``) words
        with their times.

        The words are the decoder's when it gives words; a phone model decoded greedily gives
        phones, so its words come from the beam search it carries (run on the same
        log-probabilities), and there are none without one (``note`` says so).
        """
        name = self.decoder_name(decoder)
        decode = self.decoder(name)
        words_by = self.words_decoder_name(name) if with_words else None
        word_decode = self.decoder(words_by) if words_by else None
        result = Transcription("", note=NO_WORDS if with_words and not word_decode else "")
        texts, notes = [], []
        for start, end, log_probs, lengths in self._segments(signal, segmentation):
            if start:
                result.cuts.append(round(start / self.sample_rate, 3))
            texts.append(decode(log_probs, lengths)[0])
            if word_decode is None:
                continue
            said = texts[-1] if word_decode is decode else word_decode(log_probs, lengths)[0]
            frames = log_probs[0, : int(lengths[0])]
            offset = start / self.sample_rate
            duration = (end - start) / self.sample_rate
            aligned = align_words(frames, said, self.units, self.frame_seconds, offset, duration)
            result.words.extend(aligned.words)
            notes.append(aligned.note)
        result.text = " ".join(text for text in texts if text)
        result.note = result.note or "; ".join(sorted({n for n in notes if n}))
        return result

    def transcribe_file(self, path: str | Path, decoder: Decoder | str = "auto") -> str:
        return self.transcribe([load_audio(path, self.sample_rate)], decoder)[0]
