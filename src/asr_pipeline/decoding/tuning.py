"""The beam search's grid of LM weights and word scores, decoded in parallel processes.

Every pair of the grid decodes the same tuning utterances with the same decoder; only two of its
options change. The pairs are independent, so forked worker processes share the decoder (its
LM, lexicon and trie) and the acoustic scores that the parent built, copy-on-write, and each
decodes whole pairs: on N cores the grid takes about 1/N of the time, with the same figures.
Written here rather than with a library because the decoder cannot be pickled: only ``fork``
hands it to the workers, which ``concurrent.futures`` does with an explicit start method.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import torch

from asr_pipeline.decoding.ctc import BeamSearchConfig
from asr_pipeline.decoding.metrics import error_rates

# (log-probabilities (B, T, C), output lengths (B,)) of the tuning utterances, batch by batch
Scores = Sequence[tuple[torch.Tensor, torch.Tensor]]

# What forked workers read: set by search_grid in the parent just before the pool forks.
_shared: tuple[Any, BeamSearchConfig, Scores, list[str]] | None = None


def _score_pair(pair: tuple[float, float]) -> dict[str, float]:
    assert _shared is not None, "search_grid sets the shared decoder before decoding"
    searching, config, scores, references = _shared
    lm_weight, word_score = pair
    decode: Callable = searching.with_settings(
        replace(config, lm_weight=lm_weight, word_score=word_score)
    )
    hypotheses = [text for log_probs, lengths in scores for text in decode(log_probs, lengths)]
    rates = error_rates(references, hypotheses)
    return {"lm_weight": lm_weight, "word_score": word_score, **rates.to_dict()}


def _one_thread() -> None:
    torch.set_num_threads(1)


def search_grid(
    searching: Any,
    config: BeamSearchConfig,
    scores: Scores,
    references: list[str],
    pairs: Sequence[tuple[float, float]],
    workers: int | None,
) -> list[dict[str, float]]:
    """Error rates of ``searching`` (a decoder with ``with_settings``) at every pair of
    ``pairs`` (LM weight, word score), in order; ``workers`` processes (None: one per core)."""
    global _shared
    workers = min(workers or os.cpu_count() or 1, len(pairs))
    _shared = (searching, config, scores, references)
    try:
        if workers <= 1 or os.name != "posix":
            return [_score_pair(pair) for pair in pairs]
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
            return list(pool.map(_score_pair, pairs))
    finally:
        _shared = None
