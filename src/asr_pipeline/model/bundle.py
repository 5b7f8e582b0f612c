"""The model bundle: everything a trained recognizer is, as one plain dict.

Feature parameters, normalisation statistics, model sizes and weights, the output units (their
tokens, and a phone model's lexicon or a subword model's sentencepiece model), and the beam search
with its language model and the settings tuned for this model. It holds only tensors and plain
values, so ``torch.load(weights_only=True)`` reads it without running code, and a registered model
decodes the same way wherever it is loaded.
"""

from __future__ import annotations

from typing import Any

import torch

from asr_pipeline.audio.features import FeatureConfig, NormalisationStats
from asr_pipeline.decoding.compressed_arpa import CompressedArpa
from asr_pipeline.decoding.ctc import BeamSearchConfig
from asr_pipeline.decoding.language_model import arpa_vocabulary
from asr_pipeline.model.factory import AnyModelConfig
from asr_pipeline.units.base import Units
from asr_pipeline.units.characters import VOCABULARY, CharacterUnits
from asr_pipeline.units.factory import units_from_dict

BUNDLE_FORMAT = 3
# 1: registered models without a beam search (no ``decoder`` entry): they still load, and decode
# greedily (tests/test_serving.py). 1 and 2: character models without a ``units`` entry (their
# ``vocabulary`` is the characters'). 3: the units travel with the model (``units``).
READABLE_FORMATS = (1, 2, 3)


# The decoder entry's LM: gzip-compressed ARPA bytes in a uint8 tensor. Bundles saved before it
# carry ARPA text under ``lm_arpa``; both are read (:func:`bundle_lm`).
LM_KEY = "lm_arpa_gz"


def bundle_lm(decoder: dict[str, Any]) -> CompressedArpa | str:
    """The ARPA LM of a bundle's ``decoder`` entry: compressed, or text in older bundles."""
    if LM_KEY in decoder:
        return CompressedArpa(decoder[LM_KEY].numpy().tobytes())
    if "lm_arpa" in decoder:
        return decoder["lm_arpa"]
    raise ValueError("the model's beam search carries no language model")


def make_bundle(
    model_config: AnyModelConfig,
    state_dict: dict[str, torch.Tensor],
    feature_config: FeatureConfig,
    stats: NormalisationStats,
    info: dict[str, Any],
    units: Units | None = None,
) -> dict[str, Any]:
    """The dict saved as ``acoustic_model`` (loadable with ``weights_only=True``); ``units``
    default to the characters."""
    units = units or CharacterUnits()
    if model_config.n_classes != len(units.tokens):
        raise ValueError(
            f"the model has {model_config.n_classes} classes but the {units.kind} units "
            f"have {len(units.tokens)} tokens"
        )
    return {
        "format": BUNDLE_FORMAT,
        "vocabulary": list(units.tokens),
        "units": units.to_dict(),
        "model_config": model_config.to_dict(),
        "feature_config": {**feature_config.__dict__},
        "normalisation": stats.to_dict(),
        "state_dict": state_dict,
        "info": info,
    }


def bundle_units(bundle: dict[str, Any]) -> Units:
    """The units a bundle's model outputs: its ``units``, or the characters for formats 1 and 2
    (refused if their vocabulary is not the characters')."""
    if bundle.get("format") not in READABLE_FORMATS:
        raise ValueError(f"unsupported model bundle format {bundle.get('format')!r}")
    if "units" in bundle:
        return units_from_dict(bundle["units"])
    if list(bundle["vocabulary"]) != list(VOCABULARY):
        raise ValueError("the model was trained with another vocabulary")
    return CharacterUnits()


def with_beam_search(
    bundle: dict[str, Any],
    config: BeamSearchConfig,
    lm: CompressedArpa | str,
    tuning: dict[str, Any],
) -> dict[str, Any]:
    """A copy of ``bundle`` that carries its beam search: the ARPA LM and the settings chosen for
    this model (``tuning`` records how: the split, the grid and its error rates).

    The units keep only what this LM needs (a phone lexicon shrinks to the LM's words): that is
    all the beam search can spell, and it keeps a registered bundle small. The LM travels
    gzip-compressed, as a ``uint8`` tensor: ``torch.save`` writes a tensor's bytes as they are,
    where a string is encoded (and read back) as a whole second copy.
    """
    lm = lm if isinstance(lm, CompressedArpa) else CompressedArpa.from_text(lm)
    units = bundle_units(bundle).restricted_to(arpa_vocabulary(lm))
    packed = torch.frombuffer(bytearray(lm.data), dtype=torch.uint8)
    decoder = {"beam": config.to_dict(), LM_KEY: packed, "tuning": tuning}
    kept = {k: v for k, v in bundle.items() if k != "source"}  # where it was read from: not saved
    return {
        **kept,
        "format": BUNDLE_FORMAT,
        "vocabulary": list(units.tokens),
        "units": units.to_dict(),
        "decoder": decoder,
    }
