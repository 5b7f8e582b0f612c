"""The character set of the whole project, the text normalisation into it, and the character units.

Index 0 is the CTC blank. Every transcript is normalised here, whatever the model's units: the
manifest, the language model and the references are words in these characters. The character
units (:class:`CharacterUnits`) keep this vocabulary and encoding exactly, so that models trained
before units were a choice (and the ``seed`` preset) load and decode as they always did.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from asr_pipeline.units.base import BLANK, Units, UnitsError

CHARACTERS: tuple[str, ...] = (" ", "'", *"abcdefghijklmnopqrstuvwxyz")
VOCABULARY: tuple[str, ...] = (BLANK, *CHARACTERS)
BLANK_INDEX = 0
_CHAR_TO_INDEX = {char: index for index, char in enumerate(VOCABULARY) if char != BLANK}
_ALLOWED = set(CHARACTERS)
_SPELLABLE = re.compile("[" + re.escape("".join(CHARACTERS[1:])) + "]+")  # a word: no space
# Typographic apostrophes and similar marks map to the one apostrophe the model knows.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})


def normalise(text: str) -> tuple[str, list[str]]:
    """Lower-case ``text`` into the model's characters.

    Returns the normalised text and the characters that had no place in the character set (digits,
    punctuation, ...), so that callers can report them instead of losing them silently. Accents are
    folded (``é`` -> ``e``) and hyphens become spaces; anything else unknown is dropped, reported.
    """
    folded = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch)).lower()
    folded = folded.replace("-", " ")
    unknown = sorted({ch for ch in folded if ch not in _ALLOWED and not ch.isspace()})
    kept = "".join(ch if ch in _ALLOWED else (" " if ch.isspace() else "") for ch in folded)
    return re.sub(r" +", " ", kept).strip(), unknown


def encode(text: str) -> list[int]:
    """Character indices of already normalised ``text``; raises on a character outside the set."""
    try:
        return [_CHAR_TO_INDEX[ch] for ch in text]
    except KeyError as error:
        raise ValueError(
            f"character {error.args[0]!r} is not in the vocabulary: normalise first"
        ) from None


def decode(indices: Iterable[int]) -> str:
    """Text of character indices (blanks are skipped; no CTC collapsing here)."""
    return "".join(VOCABULARY[i] for i in indices if i != BLANK_INDEX)


def words(texts: Sequence[str]) -> list[str]:
    """All words of ``texts``, in order."""
    return [word for text in texts for word in text.split()]


class CharacterUnits(Units):
    """The characters above, as :class:`Units`: today's vocabulary and encoding, unchanged.

    The space is the word boundary (flashlight's decoder calls it ``|``); a word's lexicon
    spelling is its letters followed by the space, as the beam search has always spelled them.
    """

    kind = "characters"

    def __init__(self) -> None:
        super().__init__(VOCABULARY, boundary=" ")

    def encode(self, text: str) -> list[int]:
        try:
            return encode(text)
        except ValueError as error:
            raise UnitsError(str(error)) from None

    def greedy_text(self, ids: Iterable[int]) -> str:
        return " ".join(decode(ids).split())

    def spellings(self, words: Iterable[str]) -> dict[str, list[list[str]]]:
        return {word: [[*word, " "]] for word in words if _SPELLABLE.fullmatch(word)}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokens": list(self.tokens)}
