"""What every kind of output unit is to the rest of the project: one small interface.

The model's classes, the training targets, greedy decoding, the beam search's lexicon and the
error rates all depend on what the model outputs. Before, that was a module constant (the
characters); now a :class:`Units` object is built once per training run and saved in the model
bundle, so that every place that reads a model (evaluation, ``asr-transcribe``, the served pyfunc)
decodes it with the units it was trained with, whatever their kind.

Conventions shared by every kind, so that the decoders need no case per kind:

- ``tokens[0]`` is the CTC blank (:data:`BLANK`);
- ``boundary`` is the token that separates words in the targets and ends every lexicon spelling
  (the space for characters, ``|`` for phones and subwords): flashlight's lexicon decoder needs
  a token after a word's last one to tell the word's end from that token held over frames
  (subword units saved before they had ``|`` in their targets spell words without it);
- ``greedy_text`` of a best path gives words for characters and subwords, and the phone string
  (words separated by ``|``) for phones, in the same form as ``reference_units`` of a transcript,
  so that greedy output and reference are scored alike.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

BLANK = "_"
WORD_BOUNDARY = "|"


class UnitsError(ValueError):
    """Text the units cannot encode (an unknown character, a word without a pronunciation)."""


class Units(ABC):
    """An inventory of output tokens and the ways between text and token sequences."""

    kind: ClassVar[str]
    # Whether greedy decoding gives words (scored by CER/WER) or units of another kind (phones,
    # scored by their own error rate, beside the words of the beam search).
    greedy_gives_words: ClassVar[bool] = True
    # Whether every lexicon spelling ends with the boundary token (every kind now) or a word ends
    # with its last token (subword units saved before: ``▁`` marks where the next one starts).
    spellings_end_with_boundary: ClassVar[bool] = True

    def __init__(self, tokens: Sequence[str], boundary: str) -> None:
        tokens = tuple(tokens)
        if not tokens or tokens[0] != BLANK:
            raise ValueError(f"the first token must be the CTC blank {BLANK!r}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("the tokens must be distinct")
        if boundary not in tokens:
            raise ValueError(f"the word boundary {boundary!r} is not a token")
        self.tokens = tokens
        self.boundary = boundary
        self.index = {token: i for i, token in enumerate(tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.tokens)} tokens)"

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token indices of normalised ``text``; :class:`UnitsError` for what cannot be."""

    def can_encode(self, text: str) -> bool:
        try:
            self.encode(text)
        except UnitsError:
            return False
        return True

    @abstractmethod
    def greedy_text(self, ids: Iterable[int]) -> str:
        """The text of a collapsed best path (repeats merged; blanks may remain, and are
        skipped)."""

    def reference_units(self, text: str) -> str:
        """``text`` in the form :meth:`greedy_text` gives, for error rates in the model's own
        units; :class:`UnitsError` when it cannot be. Words, for kinds whose greedy output is
        words."""
        return text

    @abstractmethod
    def spellings(self, words: Iterable[str]) -> dict[str, list[list[str]]]:
        """Each word's spellings as token sequences (several allowed), for the lexicon beam
        search; words that cannot be spelled are left out (the caller counts them)."""

    def restricted_to(self, words: Iterable[str]) -> Units:
        """Units that need to know only ``words`` (a lexicon shrinks to them; others: self)."""
        return self

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Plain values only (``torch.load(weights_only=True)`` reads them), with ``kind``."""

    def digest(self) -> str:
        """A short hash of everything that decides the targets (for checkpoint fingerprints)."""

        def plain(value: Any) -> Any:
            return value.hex() if isinstance(value, bytes) else str(value)

        payload = json.dumps(self.to_dict(), sort_keys=True, default=plain)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]
