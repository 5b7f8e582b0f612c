"""Validation after each epoch: CTC loss and greedy-decoding CER/WER on the validation split.

Greedy decoding needs no language model, so the figures follow the acoustic model alone; the
validation CER picks the best epoch and drives early stopping.
"""

from __future__ import annotations

import numpy as np
import torch

from asr_pipeline.corpus.buckets import bucket_batches
from asr_pipeline.decoding.ctc import greedy_decode
from asr_pipeline.decoding.metrics import error_rates
from asr_pipeline.trainer.batching import BatchLoader, batch_loss
from asr_pipeline.trainer.ranks import Ranks

NO_VALIDATION = {"val_loss": float("nan"), "val_cer": float("nan"), "val_wer": float("nan")}


class Validator:
    """Validates models on the utterances of ``loader``, in batches of twice the training size.

    There are no gradients to hold, so larger batches fit; their order is fixed, so figures of
    different epochs and models compare.
    """

    def __init__(self, loader: BatchLoader, max_batch_frames: int, ranks: Ranks) -> None:
        self.loader = loader
        self.ranks = ranks
        self.batches = bucket_batches(
            loader.index.num_frames.tolist(), max_batch_frames * 2, seed=0, shuffle=False
        )

    @torch.inference_mode()
    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        """Validation loss and greedy CER/WER of ``model`` (NaN without a validation split)."""
        if self.loader.index.empty:
            return dict(NO_VALIDATION)
        model.eval()
        # batch-norm statistics drift apart between ranks: all validate rank 0's model
        self.ranks.broadcast_buffers(model)
        references, hypotheses, losses, weights = [], [], [], []
        for batch in self.loader.iterate(self.batches):
            loss, log_probs, out_lengths = batch_loss(model, batch, self.ranks.device)
            losses.append(loss.item())
            weights.append(len(batch.texts))
            references += batch.texts
            hypotheses += greedy_decode(log_probs.cpu(), out_lengths.cpu())
        rates = error_rates(references, hypotheses)
        return {
            "val_loss": float(np.average(losses, weights=weights)),
            "val_cer": rates.cer,
            "val_wer": rates.wer,
        }

    def epoch_figures(
        self, evaluated: torch.nn.Module, trained: torch.nn.Module | None = None
    ) -> dict[str, float]:
        """The figures of the evaluated model, and with a weight average those of the trained
        weights too (``*_raw``), to show what the average gains."""
        figures = self(evaluated)
        if trained is not None:
            figures |= {f"{name}_raw": value for name, value in self(trained).items()}
        return figures
