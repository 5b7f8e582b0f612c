"""Nodes of the language_model pipeline."""

from __future__ import annotations

from typing import Any

import pandas as pd

from asr_pipeline.decoding.ctc import BeamSearchConfig
from asr_pipeline.decoding.language_model import build_arpa, common_words


def build_transcript_lm(
    manifest_splits: pd.DataFrame, word_frequencies: pd.DataFrame, params: dict[str, Any]
) -> str:
    """A word n-gram LM (ARPA) of the training transcripts, no test text, backed by common words.

    The transcripts' own words and n-grams carry most of the probability; the unigram level's
    leftover mass goes to the ``background_words`` most frequent words of general text (none
    when 0), so that the lexicon beam search can also spell words the transcripts never had.
    """
    train_text = manifest_splits.loc[manifest_splits.split == "train", "text"].tolist()
    config = BeamSearchConfig.from_params(params)
    background = common_words(
        word_frequencies[["word", "frequency"]].itertuples(index=False, name=None),
        config.background_words,
    )
    return build_arpa(
        train_text,
        order=config.lm_order,
        background=background or None,
        prune=params.get("lm_prune") or (),
    )
