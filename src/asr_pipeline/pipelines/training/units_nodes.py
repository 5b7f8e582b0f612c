"""The node that makes the model's output units from the training transcripts.

Its output, ``output_units``, goes into training (the targets and the number of classes), and
through the model bundle into the beam search (the lexicon spells the LM's words in the units),
evaluation, ``asr-transcribe`` and the served model. It is made in the training pipeline, not
before, so that ``--params units.kind=phones`` on a training run is all it takes to switch.

``units_report`` counts what the units cannot encode in the training and validation transcripts:
for phones, the words without a pronunciation in the dictionary (the most frequent of them by
name), how many the grapheme-to-phoneme fallback pronounced (``units.phones.missing_words: g2p``)
and the utterances left out of training (all those with such a word, with ``exclude``). It is the
data-quality report's companion for the units (that report is made before any units exist).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from asr_pipeline.pipelines.data_engineering.nodes import require_training_split
from asr_pipeline.units.factory import UnitsConfig, build_units, coverage

logger = logging.getLogger(__name__)


def preset_units(training_params: dict[str, Any]) -> str | None:
    """The units the chosen preset is made for (its ``units`` key, e.g. ``seed``: characters),
    or None when it fits any."""
    return training_params["presets"].get(training_params["preset"], {}).get("units")


def build_output_units(
    manifest_splits: pd.DataFrame,
    pronunciations: pd.DataFrame,
    params: dict[str, Any],
    training_params: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The units of ``units.kind`` (as a plain dict) and what they cannot encode, by split.

    A preset that names its units (``units:`` in ``training.presets``; ``seed``, the original
    design, outputs characters) gets those whatever ``units.kind`` says. Subwords are trained on
    the training transcripts only; phones come from the pronunciation dictionary
    (``pronunciations``: ``word``, ``pronunciation`` columns), which only phone units read.
    """
    require_training_split(manifest_splits, "training (output units)")
    pinned = preset_units(training_params)
    if pinned is not None and pinned != params["kind"]:
        logger.info(
            "Preset %r outputs %s (its design): units.kind %s does not apply to it",
            training_params["preset"],
            pinned,
            params["kind"],
        )
        params = {**params, "kind": pinned}
    config = UnitsConfig.from_params(params)
    texts = {
        split: manifest_splits.loc[manifest_splits.split == split, "text"].tolist()
        for split in ("train", "validation")
    }
    entries = None
    if config.kind == "phones":
        entries = pronunciations[["word", "pronunciation"]].itertuples(index=False, name=None)
        if config.stress and not pronunciations.pronunciation.str.contains(r"[012]\b").any():
            logger.warning("units.phones.stress: the pronunciation dictionary has no stress marks")
    units = build_units(config, texts["train"], entries, cover=texts["train"] + texts["validation"])
    report = coverage(units, texts)
    logger.info("Output units: %s, %d tokens (with the CTC blank)", units.kind, len(units.tokens))
    for split, counts in report["splits"].items():
        if counts["utterances_excluded"] or counts["words_without_pronunciation"]:
            log = logger.warning if counts["utterances_excluded"] else logger.info
            log(
                "%s: %d of %d words (%d distinct) have no pronunciation in the dictionary, "
                "%d pronounced by the grapheme-to-phoneme fallback; %d of %d utterances "
                "cannot be encoded in %s and are left out",
                split,
                counts["words_without_pronunciation"],
                counts["words"],
                counts["distinct_words_without_pronunciation"],
                counts["words_pronounced_by_g2p"],
                counts["utterances_excluded"],
                counts["utterances"],
                units.kind,
            )
    return units.to_dict(), report
