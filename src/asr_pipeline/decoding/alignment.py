"""Word timings: the decoded words aligned to the model's CTC output with ``forced_align``.

Why align instead of reading the times off the decoder: greedy decoding keeps no frame indices,
and flashlight's beam search gives word times only for some of its decoders. A CTC forced
alignment of the decoded words, spelled in the model's own units (``units.encode``; a phone
model's first pronunciation), gives every decoder the same timings, from the same
log-probabilities the words were decoded from.

A word starts at the first output frame of its first token and ends after the last frame of its
last token; an output frame lasts ``hop_length / sample_rate`` times the model's time
subsampling (:func:`frame_seconds`). Nothing here raises for text it cannot time: words the units
cannot spell, or more tokens than frames, give the words without timings and a ``note`` saying why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchaudio.functional as AF

from asr_pipeline.units.base import Units, UnitsError


@dataclass(frozen=True)
class WordTiming:
    """One word and its start and end in seconds (None when it could not be aligned)."""

    word: str
    start: float | None
    end: float | None

    def to_dict(self) -> dict[str, str | float | None]:
        return {"word": self.word, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class WordAlignment:
    """The words of a text with their timings; ``note`` says why they have none ("" if they do)."""

    words: list[WordTiming]
    note: str = ""

    @classmethod
    def untimed(cls, words: Sequence[str], note: str) -> WordAlignment:
        return cls([WordTiming(word, None, None) for word in words], note)


def frame_seconds(
    hop_length: int, sample_rate: int, feature_frames: int, output_frames: int
) -> float:
    """Seconds per model output frame: a feature hop times the model's time subsampling, found
    from how many output frames ``feature_frames`` input frames give (the models only say their
    output length, not their stride; a long input makes the rounding exact)."""
    subsampling = round(feature_frames / output_frames)
    return hop_length / sample_rate * max(subsampling, 1)


def word_tokens(words: Sequence[str], units: Units) -> tuple[list[int], list[tuple[int, int]]]:
    """The token sequence the model was trained to output for ``words``, and each word's first
    and last token index in it; :class:`UnitsError` for a word the units cannot spell.

    Each word is spelled alone, then the words are joined as the units join them in their
    targets: with the boundary token between words (every kind now) or without (subword units
    saved before, whose pieces mark a word's start themselves); whichever equals the whole text's
    encoding.
    """
    spelled = [units.encode(word) for word in words]
    if any(not tokens for tokens in spelled):
        raise UnitsError("a word spells to no token")
    whole = units.encode(" ".join(words))
    boundary = [units.index[units.boundary]]
    joined_with = [t for i, ts in enumerate(spelled) for t in (boundary if i else []) + ts]
    separator = boundary if whole == joined_with and len(words) > 1 else []
    tokens: list[int] = []
    spans = []
    for i, spelling in enumerate(spelled):
        if i:
            tokens.extend(separator)
        spans.append((len(tokens), len(tokens) + len(spelling) - 1))
        tokens.extend(spelling)
    return tokens, spans


def frames_needed(tokens: Sequence[int]) -> int:
    """The fewest CTC frames that can say ``tokens``: one each, and a blank between repeats."""
    repeats = sum(a == b for a, b in zip(tokens, tokens[1:], strict=False))
    return len(tokens) + repeats


def align_words(
    log_probs: torch.Tensor,
    text: str,
    units: Units,
    seconds_per_frame: float,
    offset: float = 0.0,
    duration: float | None = None,
) -> WordAlignment:
    """Timings of the words of ``text`` in one utterance's ``(T, C)`` log-probabilities (its
    real frames only), in seconds from ``offset`` (the segment's start in the recording).

    ``duration``: the audio's length; the last frame may reach past it (the features' frames are
    centred on their hop, so there is one more than hops fit), and no time does.
    """
    words = text.split()
    if not words:
        return WordAlignment([])
    try:
        tokens, spans = word_tokens(words, units)
    except UnitsError as error:
        return WordAlignment.untimed(words, f"the words cannot be spelled in the units: {error}")
    frames = log_probs.shape[0]
    if frames_needed(tokens) > frames:
        return WordAlignment.untimed(
            words,
            f"alignment impossible: {len(tokens)} tokens need {frames_needed(tokens)} frames, "
            f"the audio gives {frames}",
        )
    path, scores = AF.forced_align(
        log_probs.float().unsqueeze(0), torch.tensor([tokens], dtype=torch.int32), blank=0
    )
    token_spans = AF.merge_tokens(path[0], scores[0].exp(), blank=0)
    if len(token_spans) != len(tokens):  # forced_align says each token once: cannot happen
        return WordAlignment.untimed(words, "alignment failed: tokens and frames disagree")
    limit = frames * seconds_per_frame if duration is None else duration

    def seconds(frame: int) -> float:
        return round(offset + min(frame * seconds_per_frame, limit), 3)

    return WordAlignment(
        [
            WordTiming(word, seconds(token_spans[first].start), seconds(token_spans[last].end))
            for word, (first, last) in zip(words, spans, strict=True)
        ]
    )
