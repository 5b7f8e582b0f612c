"""Corpus error rates with jiwer: total edits over total reference length, not a mean of rates.

Words and characters (WER/CER) for text; the same over space-separated units (PER) for phones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer

from asr_pipeline.units.base import WORD_BOUNDARY


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


@dataclass
class UnitErrorRates:
    """The error rate of units other than words and characters (phones: PER), word boundaries
    (``|``) left out: a phone model is scored on the phones it says, not on where words end."""

    per: float
    substitutions: int
    deletions: int
    insertions: int
    reference_units: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _units(text: str) -> str:
    return " ".join(unit for unit in text.split() if unit != WORD_BOUNDARY)


def unit_error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> UnitErrorRates:
    """Corpus error rate of space-separated units (e.g. phone strings), edits over the total
    reference length; pairs with an empty reference (nothing to score against) are skipped."""
    pairs = [(_units(r), _units(h)) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        raise ValueError("no references to score")
    units = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    return UnitErrorRates(
        per=units.wer,
        substitutions=units.substitutions,
        deletions=units.deletions,
        insertions=units.insertions,
        reference_units=units.hits + units.substitutions + units.deletions,
    )


def utterance_unit_error_rate(reference: str, hypothesis: str) -> float:
    """The unit error rate of one utterance (NaN without a reference to score against)."""
    reference, hypothesis = _units(reference), _units(hypothesis)
    if not reference:
        return float("nan")
    return jiwer.wer(reference, hypothesis)
