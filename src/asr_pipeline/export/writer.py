"""Write a model bundle as an exported folder: ONNX models and the plain files around them.

A bundle (:mod:`asr_pipeline.model.bundle`) is what a recognizer is; an ONNX file alone is only
its network. The folder keeps the rest beside it, in formats any language reads, so that the
exported model computes exactly the features it was trained on and its output can be decoded:

    model.onnx        features (1, n_features, frames) -> log_probs (1, out_frames, n_classes)
    model.int8.onnx   the same, int8 dynamically quantised (smaller, faster on CPU)
    config.json       feature settings, normalisation, model settings, units and vocabulary,
                      seconds per output frame, the beam search's settings (when it has one)
    features.npz      the STFT window, mel filter bank (and DCT) of torchaudio's transform
    lm.arpa           the beam search's language model (when the bundle carries one)
    units.*           bytes the units carry (a subword model's sentencepiece model), if any
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor
from asr_pipeline.decoding.alignment import frame_seconds
from asr_pipeline.decoding.language_model import write_arpa
from asr_pipeline.export.onnx_model import (
    INPUT_NAME,
    OUTPUT_NAME,
    export_onnx,
    max_difference,
    quantize_int8,
)
from asr_pipeline.model.bundle import bundle_lm, bundle_units
from asr_pipeline.model.factory import build_acoustic_model, model_config_from_dict

EXPORT_FORMAT = 1
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
CONFIG_FILE = "config.json"
FEATURES_FILE = "features.npz"
LM_FILE = "lm.arpa"
# fp32 ONNX Runtime against PyTorch on random features: float rounding only (measured ~1e-6)
EXPORT_TOLERANCE = 1e-3
CHECK_FRAMES = (1, 57, 400)


@dataclass
class ExportResult:
    """The folder written, its files (name -> path) and how the export was checked."""

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    exporter: str = ""
    fp32_max_difference: float = 0.0


def spectral_matrices(config: FeatureConfig) -> dict[str, np.ndarray]:
    """torchaudio's window (zero-padded to ``n_fft``, centred, as ``torch.stft`` pads it), mel
    filter bank and (MFCC) DCT matrix for ``config``."""
    transform = FeatureExtractor(config).transform
    mel = transform.MelSpectrogram if config.kind == "mfcc" else transform
    window = mel.spectrogram.window
    left = (config.n_fft - len(window)) // 2
    padded = torch.nn.functional.pad(window, (left, config.n_fft - len(window) - left))
    matrices = {"window": padded.numpy(), "mel_filters": mel.mel_scale.fb.numpy()}
    if config.kind == "mfcc":
        matrices["dct"] = transform.dct_mat.numpy()
    return matrices


def _plain_units(units: dict[str, Any], folder: Path, files: dict[str, Path]) -> dict[str, Any]:
    """``units`` with each bytes value written to ``units.<key>`` and replaced by its name."""
    plain = {}
    for key, value in units.items():
        plain[key] = value
        if isinstance(value, bytes):
            path = folder / f"units.{key}"
            path.write_bytes(value)
            files[path.name] = path
            plain[key] = {"file": path.name}
    return plain


def export_bundle(bundle: dict[str, Any], out: str | Path, quantize: bool = True) -> ExportResult:
    """Write ``bundle`` to the folder ``out`` (created; existing files of the same names are
    replaced). Raises ValueError when ONNX Runtime disagrees with PyTorch on the exported file."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    units = bundle_units(bundle)  # checks the format
    feature_config = FeatureConfig(**bundle["feature_config"])
    model_config = model_config_from_dict(bundle["model_config"])
    model = build_acoustic_model(model_config)
    model.load_state_dict(bundle["state_dict"])
    model.eval()
    result = ExportResult(folder)
    n_features = model_config.n_features

    onnx_path = folder / MODEL_FILE
    result.exporter = export_onnx(model, n_features, onnx_path)
    result.fp32_max_difference = max_difference(model, onnx_path, n_features, CHECK_FRAMES)
    if not result.fp32_max_difference <= EXPORT_TOLERANCE:
        raise ValueError(
            f"the exported model differs from PyTorch by {result.fp32_max_difference:.3g} "
            f"(tolerance {EXPORT_TOLERANCE}): the export graphs miss a change to the model"
        )
    result.files[MODEL_FILE] = onnx_path
    if quantize:
        quantize_int8(onnx_path, folder / INT8_FILE)
        result.files[INT8_FILE] = folder / INT8_FILE

    np.savez(folder / FEATURES_FILE, **spectral_matrices(feature_config))
    result.files[FEATURES_FILE] = folder / FEATURES_FILE

    decoder = bundle.get("decoder")
    if decoder:
        write_arpa(bundle_lm(decoder), folder / LM_FILE)
        result.files[LM_FILE] = folder / LM_FILE
    frames = 100_000  # seconds per output frame, as the Recognizer computes it
    out_frames = int(model.output_lengths(torch.tensor([frames]))[0])
    config = {
        "format": EXPORT_FORMAT,
        "source": str(bundle.get("source", "")),
        "exporter": result.exporter,
        "input": {"name": INPUT_NAME, "shape": [1, n_features, "frames"], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": [1, "out_frames", len(units.tokens)]},
        "feature_config": dict(bundle["feature_config"]),
        "normalisation": dict(bundle["normalisation"]),
        "model_config": model_config.to_dict(),
        "vocabulary": list(units.tokens),
        "units": _plain_units(units.to_dict(), folder, result.files),
        "frame_seconds": frame_seconds(
            feature_config.hop_length, feature_config.sample_rate, frames, out_frames
        ),
        "decoder": (
            {"beam": decoder["beam"], "lm_arpa": LM_FILE, "tuning": decoder.get("tuning")}
            if decoder
            else None
        ),
        "info": bundle.get("info", {}),
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")
    result.files[CONFIG_FILE] = folder / CONFIG_FILE
    return result
