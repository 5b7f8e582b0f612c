"""Nodes of the language_model pipeline."""

from __future__ import annotations

from typing import Any

import pandas as pd

from asr_pipeline.decoding.compressed_arpa import CompressedArpa
from asr_pipeline.decoding.ctc import BeamSearchConfig
from asr_pipeline.decoding.language_model import build_arpa, common_words
from asr_pipeline.decoding.lm_entropy_pruning import prune
from asr_pipeline.decoding.sphinx_lm import SphinxLM

LM_SOURCES = ("general", "transcripts")


def build_word_lm(
    manifest_splits: pd.DataFrame,
    word_frequencies: pd.DataFrame,
    general_lm: SphinxLM,
    params: dict[str, Any],
) -> CompressedArpa:
    """The beam search's word LM (ARPA, gzip-compressed), from ``beam_search.lm_source``.

    ``general``: the general-English LM (``general_lm``), pruned by relative entropy at
    ``general_lm_prune`` (0: as it is); ``transcripts``: a Kneser-Ney LM of the training
    transcripts (:func:`build_transcript_lm`). With a few hours of transcripts the general LM
    predicts the words of unseen speakers better (docs/accuracy.md).
    """
    source = params["lm_source"]
    if source == "general":
        threshold = params["general_lm_prune"]
        lm = prune(general_lm, threshold) if threshold else general_lm
        return CompressedArpa.from_chunks(lm.arpa_chunks())  # never the whole text at once
    if source == "transcripts":
        return CompressedArpa.from_text(
            build_transcript_lm(manifest_splits, word_frequencies, params)
        )
    raise ValueError(f"beam_search.lm_source must be one of {LM_SOURCES}, got {source!r}")


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
