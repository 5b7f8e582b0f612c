"""Corpus error rates with jiwer: total edits over total reference length, not a mean of rates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer


@dataclass
class ErrorRates:
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
    """Corpus WER and CER of ``hypotheses`` against ``references`` (word edits detailed)."""
    if not references:
        raise ValueError("no references to score")
    # jiwer refuses empty references; an empty pair contributes nothing either way.
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    refs = [r for r, _ in pairs]
    hyps = [h for _, h in pairs]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return ErrorRates(
        wer=words.wer,
        cer=chars.cer,
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions,
        reference_words=words.hits + words.substitutions + words.deletions,
    )


def utterance_error_rates(reference: str, hypothesis: str) -> tuple[float, float]:
    """(WER, CER) of one utterance."""
    if not reference.strip():
        return (0.0 if not hypothesis.strip() else 1.0,) * 2
    return jiwer.wer(reference, hypothesis), jiwer.cer(reference, hypothesis)
