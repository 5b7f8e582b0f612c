"""A trained recognizer: audio in, text out, with the features and statistics it was trained on.

It is built from a model bundle (:mod:`asr_pipeline.model.bundle`), so that training, evaluation,
``asr-transcribe`` and the served model all compute features, run the network and decode alike,
with the units the model was trained with (``units``): greedy decoding spells them, the beam
search spells its LM's words in them, so its output is words whatever the units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor, NormalisationStats
from asr_pipeline.audio.loading import load_audio
from asr_pipeline.decoding.ctc import BeamSearchConfig, BeamSearchDecoder, greedy_decode
from asr_pipeline.model.bundle import bundle_units
from asr_pipeline.model.factory import build_acoustic_model, model_config_from_dict

DECODER_NAMES = ("auto", "beam", "greedy")
Decoder = Callable[[torch.Tensor, torch.Tensor], list[str]]


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
            lm_arpa = self.beam_search["lm_arpa"]
            self._decoders["beam"] = BeamSearchDecoder.from_arpa(config, lm_arpa, self.units)
        return self._decoders[name]

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

    def transcribe(
        self,
        signals: Sequence[torch.Tensor],
        decoder: Decoder | str = "auto",
        chunk_seconds: float = 30.0,
    ) -> list[str]:
        """Text of each signal; long signals are cut into chunks so memory stays bounded.

        ``decoder`` is a decoding function or the name of one of :meth:`decoder`.
        """
        if isinstance(decoder, str):
            decoder = self.decoder(decoder)
        chunk = int(chunk_seconds * self.sample_rate)
        texts = []
        for signal in signals:
            pieces = [signal[i : i + chunk] for i in range(0, max(len(signal), 1), chunk)]
            # the STFT needs more than n_fft // 2 samples: a shorter last piece joins the one before
            if len(pieces) > 1 and len(pieces[-1]) <= self.feature_config.n_fft // 2:
                pieces[-2] = torch.cat(pieces[-2:])
                pieces.pop()
            words = []
            for piece in pieces:  # one chunk at a time: memory stays flat for hours of audio
                log_probs, lengths = self.log_probs([piece])
                words.append(decoder(log_probs, lengths)[0])
            texts.append(" ".join(w for w in words if w))
        return texts

    def transcribe_file(self, path: str | Path, decoder: Decoder | str = "auto") -> str:
        return self.transcribe([load_audio(path, self.sample_rate)], decoder)[0]
