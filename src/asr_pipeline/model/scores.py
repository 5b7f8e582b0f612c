"""CTC log-probabilities of manifest utterances from their audio, batch by batch.

Decoding settings are tuned and models are evaluated on what the model computes from the audio
files, exactly as when serving: the acoustic model runs once, and every decoder reads its output.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pandas as pd
import torch

from asr_pipeline.audio.loading import AudioError, load_audio
from asr_pipeline.common.progress import progress_bar
from asr_pipeline.corpus.buckets import bucket_batches
from asr_pipeline.model.recognizer import Recognizer

logger = logging.getLogger(__name__)


def acoustic_scores(
    recognizer: Recognizer, rows: pd.DataFrame, batch_seconds: float, desc: str
) -> Iterator[tuple[list, torch.Tensor, torch.Tensor]]:
    """``(utterances, log_probs, lengths)`` per batch of ``rows`` (manifest rows with ``path``
    and ``duration_s``), batched by length. A file that cannot be read is logged and left out."""
    centiseconds = (rows.duration_s * 100).round().astype(int).tolist()
    batches = bucket_batches(centiseconds, int(batch_seconds * 100), seed=0, shuffle=False)
    with progress_bar(total=round(rows.duration_s.sum(), 1), unit="audio-s", desc=desc) as bar:
        for batch in batches:
            items = rows.iloc[batch]
            signals, kept = [], []
            for item in items.itertuples(index=False):
                try:
                    signals.append(load_audio(item.path, recognizer.sample_rate))
                    kept.append(item)
                except AudioError as error:
                    logger.error("Skipping %s: %s", item.utterance_id, error)
            bar.update(min(items.duration_s.sum(), bar.total - bar.n))  # float sums drift
            if signals:
                yield (kept, *recognizer.log_probs(signals))
