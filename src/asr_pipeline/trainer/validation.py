"""Validation after each epoch: CTC loss and greedy-decoding error rates on the validation split.

Greedy decoding needs no language model, so the figures follow the acoustic model alone. Units
whose best path spells words (characters, subwords) are scored by CER and WER (``val_cer``,
``val_wer``); phone models by their phone error rate (``val_per``: a phone string is no text to
take a CER of). The first of these (:func:`selection_metric`) picks the best epoch and drives early
stopping.
"""

from __future__ import annotations

import numpy as np
import torch

from asr_pipeline.corpus.buckets import bucket_batches
from asr_pipeline.decoding.ctc import greedy_decode
from asr_pipeline.decoding.metrics import error_rates, unit_error_rates
from asr_pipeline.trainer.batching import UtteranceDataset, batch_loss
from asr_pipeline.trainer.loader import LoaderSettings, batch_loader
from asr_pipeline.trainer.ranks import Ranks
from asr_pipeline.units.base import Units


def metric_names(units: Units) -> tuple[str, ...]:
    """The validation error rates of a model of ``units``, the selection metric first."""
    return ("val_cer", "val_wer") if units.greedy_gives_words else ("val_per",)


def selection_metric(units: Units) -> str:
    """The validation error rate that picks the best epoch."""
    return metric_names(units)[0]


def describe_rates(record: dict[str, float]) -> str:
    """``val CER 12.3%, WER 45.6%`` (or ``val PER 12.3%``) of an epoch's record, for the log."""
    names = [name for name in ("val_cer", "val_wer", "val_per") if name in record]
    rates = [f"{name.removeprefix('val_').upper()} {100 * record[name]:.1f}%" for name in names]
    return "val " + ", ".join(rates)


class Validator:
    """Validates models on the utterances of ``dataset``, in batches of twice the training size.

    There are no gradients to hold, so larger batches fit; their order is fixed, so figures of
    different epochs and models compare.
    """

    def __init__(
        self,
        dataset: UtteranceDataset,
        max_batch_frames: int,
        ranks: Ranks,
        loader_settings: LoaderSettings,
    ) -> None:
        self.dataset = dataset
        self.ranks = ranks
        self.loader_settings = loader_settings
        self.batches = bucket_batches(
            dataset.index.num_frames.tolist(), max_batch_frames * 2, seed=0, shuffle=False
        )

    @torch.inference_mode()
    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        """Validation loss and greedy error rates of ``model`` (NaN without a validation split).

        Under ``torchrun`` each rank decodes every ``world_size``-th batch and the ranks swap
        what they decoded, so every rank scores all of it in the order one process would: the
        same figures, in a fraction of the time.
        """
        units = self.dataset.units
        if self.dataset.index.empty:
            return dict.fromkeys(("val_loss", *metric_names(units)), float("nan"))
        model.eval()
        # batch-norm statistics drift apart between ranks: all validate rank 0's model
        self.ranks.broadcast_buffers(model)
        mine = list(range(self.ranks.rank, len(self.batches), self.ranks.world_size))
        loader = batch_loader(
            self.dataset, [self.batches[i] for i in mine], self.loader_settings, self.ranks, False
        )
        decoded = []  # (batch number, loss, utterances, references, hypotheses)
        for number, batch in zip(mine, loader, strict=True):
            loss, log_probs, out_lengths = batch_loss(model, batch, self.ranks.device)
            references = [units.reference_units(text) for text in batch.texts]
            hypotheses = greedy_decode(log_probs.cpu(), out_lengths.cpu(), units)
            decoded.append((number, loss.item(), len(batch.texts), references, hypotheses))
        everything = sorted(item for share in self.ranks.gather(decoded) for item in share)
        loss = float(np.average([d[1] for d in everything], weights=[d[2] for d in everything]))
        references = [text for d in everything for text in d[3]]
        hypotheses = [text for d in everything for text in d[4]]
        if not units.greedy_gives_words:
            return {"val_loss": loss, "val_per": unit_error_rates(references, hypotheses).per}
        rates = error_rates(references, hypotheses)
        return {"val_loss": loss, "val_cer": rates.cer, "val_wer": rates.wer}

    def epoch_figures(
        self, evaluated: torch.nn.Module, trained: torch.nn.Module | None = None
    ) -> dict[str, float]:
        """The figures of the evaluated model, and with a weight average those of the trained
        weights too (``*_raw``), to show what the average gains."""
        figures = self(evaluated)
        if trained is not None:
            figures |= {f"{name}_raw": value for name, value in self(trained).items()}
        return figures
