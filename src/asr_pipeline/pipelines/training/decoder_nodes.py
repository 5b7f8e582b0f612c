"""Nodes that give the trained acoustic model its beam search: the language_model pipeline's word
LM and the settings tuned for this model.

The LM and the LM weight / word score chosen for this model travel inside the model bundle, so a
registered model decodes with them wherever it is loaded (evaluation, ``asr-transcribe``, the
served pyfunc). The settings are tuned on the validation speakers, never on the evaluated ones.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from asr_pipeline.decoding.compressed_arpa import CompressedArpa
from asr_pipeline.decoding.ctc import BeamSearchConfig
from asr_pipeline.decoding.tuning import search_grid
from asr_pipeline.model.bundle import with_beam_search
from asr_pipeline.model.recognizer import Recognizer
from asr_pipeline.model.scores import acoustic_scores

logger = logging.getLogger(__name__)


def tune_beam_search(
    acoustic_model: dict[str, Any],
    manifest_splits: pd.DataFrame,
    word_lm: CompressedArpa,
    params: dict[str, Any],
    evaluated_split: str,
) -> dict[str, Any]:
    """LM weight and word score of the beam search with the lowest WER on the tuning split.

    The tuning split is the validation speakers, never the evaluated ones: settings chosen on the
    test speakers would flatter the reported WER. The acoustic model runs once and the LM loads
    once; only the search is repeated for every pair of the grid.
    """
    config = BeamSearchConfig.from_params(params)  # checked before the acoustic model runs
    tune = params.get("tune")
    # as configured, tuned on nothing: what is kept when there is no tuning to do
    configured = {k: params[k] for k in ("lm_weight", "word_score")} | {"split": None, "grid": []}
    if not tune:
        logger.info("Beam search settings as configured (no tuning asked for)")
        return configured
    if tune["split"] == evaluated_split:
        raise ValueError(
            f"beam_search.tune.split is the evaluated split ({evaluated_split!r}): settings "
            "tuned on the test speakers would flatter the reported WER; tune on another split"
        )
    rows = _bounded_slice(manifest_splits[manifest_splits.split == tune["split"]], tune)
    recognizer = Recognizer(acoustic_model)
    scored = list(acoustic_scores(recognizer, rows, tune["batch_seconds"], "tuning beam"))
    references = [item.text for items, _, _ in scored for item in items]
    if not references or not tune["lm_weight"] or not tune["word_score"]:
        logger.warning(
            "Beam search settings as configured: no readable %r utterances or an empty grid",
            tune["split"],
        )
        return configured
    # the LM, lexicon and trie load once (about 1 s): each pair of the grid only sets options
    searching = recognizer.beam_search_decoder(config, word_lm)
    pairs = [(lm, score) for lm in tune["lm_weight"] for score in tune["word_score"]]
    scores = [(log_probs, lengths) for _, log_probs, lengths in scored]
    grid = search_grid(searching, config, scores, references, pairs, tune["workers"])
    best = min(grid, key=lambda g: (g["wer"], g["cer"]))
    logger.info(
        "Beam search tuned on %d %s utterances: LM weight %g, word score %g (WER %.1f%%; "
        "worst of the grid %.1f%%)",
        len(references),
        tune["split"],
        best["lm_weight"],
        best["word_score"],
        100 * best["wer"],
        100 * max(g["wer"] for g in grid),
    )
    return {
        "lm_weight": best["lm_weight"],
        "word_score": best["word_score"],
        "split": tune["split"],
        "grid": grid,
    }


def _bounded_slice(rows: pd.DataFrame, tune: dict[str, Any]) -> pd.DataFrame:
    """At most ``tune.max_utterances`` of the tuning rows, spread evenly over them (sorted by
    utterance, so over every speaker); all of them when it is null."""
    limit = tune["max_utterances"]
    if not limit or len(rows) <= limit:
        return rows
    ordered = rows.sort_values("utterance_id")
    return ordered.iloc[np.linspace(0, len(ordered) - 1, int(limit)).round().astype(int)]


def attach_beam_search(
    acoustic_model: dict[str, Any],
    word_lm: CompressedArpa,
    beam_settings: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, Any]:
    """The model bundle that is kept and registered: the trained model with its beam search."""
    tuned = {k: beam_settings[k] for k in ("lm_weight", "word_score")}
    config = replace(BeamSearchConfig.from_params(params), **tuned)
    return with_beam_search(acoustic_model, config, word_lm, beam_settings)
