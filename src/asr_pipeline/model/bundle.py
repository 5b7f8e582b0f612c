"""The model bundle: everything a trained recognizer is, as one plain dict.

Feature parameters, normalisation statistics, model sizes and weights, the vocabulary, and the beam
search with its language model and the settings tuned for this model. It holds only tensors and
plain values, so ``torch.load(weights_only=True)`` reads it without running code, and a registered
model decodes the same way wherever it is loaded.
"""

from __future__ import annotations

from typing import Any

import torch

from asr_pipeline.audio.features import FeatureConfig, NormalisationStats
from asr_pipeline.decoding.ctc import BeamSearchConfig
from asr_pipeline.model.acoustic import ModelConfig
from asr_pipeline.units.characters import VOCABULARY

BUNDLE_FORMAT = 2
# 1: registered models without a beam search (no ``decoder`` entry): they still load, and decode
# greedily (tests/test_serving.py).
READABLE_FORMATS = (1, 2)


def make_bundle(
    model_config: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    feature_config: FeatureConfig,
    stats: NormalisationStats,
    info: dict[str, Any],
) -> dict[str, Any]:
    """The dict saved as ``acoustic_model`` (loadable with ``weights_only=True``)."""
    return {
        "format": BUNDLE_FORMAT,
        "vocabulary": list(VOCABULARY),
        "model_config": model_config.to_dict(),
        "feature_config": {**feature_config.__dict__},
        "normalisation": stats.to_dict(),
        "state_dict": state_dict,
        "info": info,
    }


def with_beam_search(
    bundle: dict[str, Any], config: BeamSearchConfig, lm_arpa: str, tuning: dict[str, Any]
) -> dict[str, Any]:
    """A copy of ``bundle`` that carries its beam search: the ARPA LM and the settings chosen for
    this model (``tuning`` records how: the split, the grid and its error rates)."""
    decoder = {"beam": config.to_dict(), "lm_arpa": lm_arpa, "tuning": tuning}
    kept = {k: v for k, v in bundle.items() if k != "source"}  # where it was read from: not saved
    return {**kept, "format": BUNDLE_FORMAT, "decoder": decoder}
