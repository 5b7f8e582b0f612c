"""Run an exported folder: CTC log-probabilities from audio with ONNX Runtime and NumPy only.

What :meth:`asr_pipeline.model.recognizer.Recognizer.log_probs` computes for one utterance, from
the files :mod:`~asr_pipeline.export.writer` wrote, without torch: a deployment needs
``onnxruntime`` and ``numpy`` (and something that decodes audio, e.g. ``soundfile``). Features
are computed by :mod:`~asr_pipeline.export.spectral`. Decoding is left to the caller: the best
path is :func:`best_path`; the vocabulary, the units and the beam search's LM and settings are in
the folder (``config.json``, ``lm.arpa``), and within this project
``asr_pipeline.decoding.ctc`` decodes the returned array with ``torch.from_numpy``.

Long recordings: the model sees the whole signal at once, so cut hours of audio into segments
first (as the Recognizer does at pauses).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from asr_pipeline.export.spectral import SpectralFeatures

VARIANTS = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


class OnnxRecognizer:
    """An exported model: audio ``(samples,)`` at :attr:`sample_rate` -> log-probabilities."""

    def __init__(self, folder: str | Path, variant: str = "fp32", threads: int | None = 1) -> None:
        """``variant``: ``fp32`` or ``int8``; ``threads``: ONNX Runtime's intra-op threads
        (None: its default, all cores)."""
        import onnxruntime

        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}: use one of {', '.join(VARIANTS)}")
        self.folder = Path(folder)
        self.config: dict[str, Any] = json.loads(
            (self.folder / "config.json").read_text(encoding="utf-8")
        )
        self.features = SpectralFeatures.load(self.folder / "features.npz", self.config)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(self.folder / VARIANTS[variant]), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.config["input"]["name"]
        self.output_name = self.config["output"]["name"]

    @property
    def sample_rate(self) -> int:
        return int(self.config["feature_config"]["sample_rate"])

    @property
    def vocabulary(self) -> list[str]:
        return list(self.config["vocabulary"])

    def log_probs_of_features(self, features: np.ndarray) -> np.ndarray:
        """``(out_frames, n_classes)`` log-probabilities of normalised ``(n_features, frames)``."""
        feed = {self.input_name: np.ascontiguousarray(features[None], dtype=np.float32)}
        (output,) = self.session.run([self.output_name], feed)
        return output[0]

    def log_probs(self, signal: np.ndarray) -> np.ndarray:
        """``(out_frames, n_classes)`` CTC log-probabilities of a mono float signal at
        :attr:`sample_rate`."""
        return self.log_probs_of_features(self.features(signal))


def best_path(log_probs: np.ndarray, blank: int = 0) -> list[int]:
    """Greedy CTC decoding of ``(frames, n_classes)``: argmax, repeats merged, blanks dropped
    (token ids; ``vocabulary[i]`` spells them)."""
    best = log_probs.argmax(axis=-1)
    if best.size == 0:
        return []
    keep = np.concatenate([[True], best[1:] != best[:-1]])
    return [int(i) for i in best[keep] if i != blank]
