"""ARPAbet phones with a pronunciation lexicon (the CMU Pronouncing Dictionary by default).

A transcript becomes phones through the lexicon: each word's first pronunciation, words separated
by the boundary token ``|``, so that the flashlight lexicon decoder finds word ends as it does for
characters (every spelling ends with ``|``). A word the lexicon lacks cannot be encoded: the
training run either guesses its pronunciation (:mod:`asr_pipeline.units.g2p`; such words are
listed in ``guessed``) or leaves its utterances out, and counts both
(see :mod:`asr_pipeline.units.factory`).

The lexicon is part of the units, and so of the model bundle: the beam search spells the LM's
words with it, several pronunciations per word allowed. While a model is trained it holds the
whole dictionary; the registered bundle keeps only the words of its LM (:meth:`restricted_to`),
which keeps the bundle a few MB. Where the dictionary comes from is the catalog's business
(``pronunciations``): this module only reads ``(word, "PH O N E S")`` pairs.

Stress: CMU-style dictionaries mark vowels with 0/1/2. ``stress: false`` strips the marks (39
phones), ``true`` keeps them (one vowel phone per stress level). The dictionary that ships with
``pocketsphinx`` has no stress marks, so both give the same 39 phones with it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import Any

from asr_pipeline.units.base import BLANK, WORD_BOUNDARY, Units, UnitsError
from asr_pipeline.units.characters import normalise

_STRESS = re.compile(r"[012]$")

Lexicon = dict[str, list[tuple[str, ...]]]


def read_lexicon(entries: Iterable[tuple[str, str]], stress: bool) -> Lexicon:
    """Pronunciations by word, from ``(word, "PH O N E S")`` pairs (variants in order, no twice).

    Words are kept only when they are a single word of the normalised transcripts (lower case,
    letters and apostrophes): ``able-bodied`` or ``a.m.`` can never occur in a transcript.
    """
    lexicon: Lexicon = {}
    for entry, pronunciation in entries:
        word = str(entry).strip().lower()
        text, unknown = normalise(word)
        if unknown or text != word or " " in word:
            continue
        phones = tuple(
            phone if stress else _STRESS.sub("", phone) for phone in str(pronunciation).split()
        )
        if not phones or WORD_BOUNDARY in phones or BLANK in phones:
            continue
        variants = lexicon.setdefault(word, [])
        if phones not in variants:
            variants.append(phones)
    return lexicon


class PhoneUnits(Units):
    """Phones of a lexicon: ``[blank, |, phones in sorted order]``."""

    kind = "phones"
    greedy_gives_words = False

    def __init__(
        self,
        lexicon: Lexicon,
        stress: bool,
        phones: Iterable[str] | None = None,
        guessed: Iterable[str] = (),
    ) -> None:
        """``phones``: the inventory (default: every phone of ``lexicon``, sorted). A bundle
        passes its own, so that a restricted lexicon never changes the model's classes.
        ``guessed``: the words whose pronunciation is a guess, not the dictionary's."""
        if phones is None:
            phones = sorted({p for variants in lexicon.values() for v in variants for p in v})
        super().__init__((BLANK, WORD_BOUNDARY, *phones), boundary=WORD_BOUNDARY)
        self.stress = stress
        self.lexicon = {
            word: variants
            for word, variants in lexicon.items()
            if all(p in self.index for v in variants for p in v)
        }
        self.guessed = frozenset(guessed) & set(self.lexicon)

    @classmethod
    def from_pronunciations(cls, entries: Iterable[tuple[str, str]], stress: bool) -> PhoneUnits:
        lexicon = read_lexicon(entries, stress)
        if not lexicon:
            raise ValueError("the pronunciation dictionary has no word of the transcripts' form")
        return cls(lexicon, stress)

    def phones_of(self, text: str) -> list[str]:
        """Phones of normalised ``text`` with ``|`` between words; raises for a word without a
        pronunciation, naming it."""
        phones: list[str] = []
        for word in text.split():
            variants = self.lexicon.get(word)
            if not variants:
                raise UnitsError(f"no pronunciation for {word!r} in the lexicon")
            if phones:
                phones.append(WORD_BOUNDARY)
            phones.extend(variants[0])
        return phones

    def missing_words(self, text: str) -> list[str]:
        """The words of ``text`` without a pronunciation."""
        return [word for word in text.split() if word not in self.lexicon]

    def encode(self, text: str) -> list[int]:
        return [self.index[phone] for phone in self.phones_of(text)]

    def greedy_text(self, ids: Iterable[int]) -> str:
        phones = [self.tokens[i] for i in ids if i != 0]
        words = " ".join(phones).split(WORD_BOUNDARY)
        return f" {WORD_BOUNDARY} ".join(w.strip() for w in words if w.strip())

    def reference_units(self, text: str) -> str:
        return " ".join(self.phones_of(text))

    def spellings(self, words: Iterable[str]) -> dict[str, list[list[str]]]:
        return {
            word: [[*variant, WORD_BOUNDARY] for variant in self.lexicon[word]]
            for word in words
            if word in self.lexicon
        }

    def restricted_to(self, words: Iterable[str]) -> PhoneUnits:
        kept = {word: self.lexicon[word] for word in words if word in self.lexicon}
        return PhoneUnits(kept, self.stress, self.tokens[2:], self.guessed)

    def with_pronunciations(self, entries: Iterable[tuple[str, str]]) -> PhoneUnits:
        """These units with the words of ``entries`` added to the lexicon (its own first): to
        turn any reference into phones when scoring, beyond the words the bundle keeps."""
        lexicon = read_lexicon(entries, self.stress) | self.lexicon
        return PhoneUnits(lexicon, self.stress, self.tokens[2:], self.guessed)

    def with_guesses(self, guesses: dict[str, tuple[str, ...]]) -> PhoneUnits:
        """These units with guessed pronunciations of words they lack (empty guesses and guesses
        with phones outside the inventory are dropped: those words stay unknown)."""
        added = {w: [p] for w, p in guesses.items() if p and w not in self.lexicon}
        lexicon = self.lexicon | added
        return PhoneUnits(lexicon, self.stress, self.tokens[2:], self.guessed | set(added))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tokens": list(self.tokens),
            "stress": self.stress,
            "lexicon": {w: [" ".join(v) for v in variants] for w, variants in self.lexicon.items()},
            "guessed": sorted(self.guessed),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PhoneUnits:
        # One string per phone, shared by every pronunciation (sys.intern), not one per
        # occurrence: a 125,189-word lexicon then holds 24 MB instead of 47 during training.
        lexicon = {
            w: [tuple(map(sys.intern, v.split())) for v in vs]
            for w, vs in values["lexicon"].items()
        }
        tokens = list(values["tokens"])
        if tokens[:2] != [BLANK, WORD_BOUNDARY]:
            raise ValueError(f"phone tokens must start with {BLANK!r}, {WORD_BOUNDARY!r}")
        return cls(lexicon, bool(values["stress"]), tokens[2:], values.get("guessed", ()))
