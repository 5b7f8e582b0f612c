"""Tests for asr_pipeline.text: the one character set of the project and normalisation into it."""

from __future__ import annotations

import pytest

from asr_pipeline.units.characters import (
    BLANK,
    BLANK_INDEX,
    CHARACTERS,
    VOCABULARY,
    decode,
    encode,
    normalise,
    words,
)


def test_vocabulary_is_blank_space_apostrophe_and_letters() -> None:
    assert len(VOCABULARY) == 29
    assert VOCABULARY[0] == BLANK == "_"
    assert BLANK_INDEX == 0
    assert BLANK not in CHARACTERS
    assert VOCABULARY[1:] == CHARACTERS
    assert len(set(VOCABULARY)) == len(VOCABULARY)
    assert set(CHARACTERS) == set(" '") | set("abcdefghijklmnopqrstuvwxyz")


def test_normalise_lower_cases_librispeech_upper_case() -> None:
    assert normalise("HELLO WORLD") == ("hello world", [])
    assert normalise("MixEd CaSe") == ("mixed case", [])


def test_normalise_reports_digits_and_punctuation() -> None:
    text, unknown = normalise("I HAVE 42 DOGS!")
    assert text == "i have dogs"
    assert unknown == ["!", "2", "4"]
    text, unknown = normalise("YES, SIR; NO. (MAYBE?)")
    assert text == "yes sir no maybe"
    assert unknown == sorted(set(",;.()?"))


@pytest.mark.parametrize("apostrophe", ["\u2019", "\u2018", "`", "\u00b4", "'"])
def test_normalise_maps_apostrophes_to_the_one_known(apostrophe: str) -> None:
    assert normalise(f"DON{apostrophe}T") == ("don't", [])


def test_normalise_folds_accents() -> None:
    assert normalise("CAF\u00c9 NA\u00cfVE FA\u00c7ADE") == ("cafe naive facade", [])
    # Already decomposed input (e + combining acute) folds the same way.
    assert normalise("CAFE\u0301") == ("cafe", [])


def test_normalise_turns_hyphens_into_spaces() -> None:
    assert normalise("WELL-KNOWN SIX--YEAR-OLD") == ("well known six year old", [])


def test_normalise_collapses_and_strips_whitespace() -> None:
    assert normalise("  A \t B\n\n C  ") == ("a b c", [])
    # Dropped characters between spaces must not leave double spaces either.
    assert normalise("A - ! B") == ("a b", ["!"])


def test_normalise_output_only_uses_the_character_set() -> None:
    text, unknown = normalise("\u00c0 l'\u00e9t\u00e9 1999, \u201cQUOTE\u201d & CO\u2026")
    assert set(text) <= set(CHARACTERS)
    assert text == "a l'ete quote co"
    assert {"1", "9", ",", "&", "\u201c", "\u201d"} <= set(unknown)


def test_normalise_of_nothing_usable_is_empty() -> None:
    assert normalise("123 !!!") == ("", ["!", "1", "2", "3"])


def test_encode_decode_round_trip() -> None:
    text = "the quick brown fox doesn't jump"
    indices = encode(text)
    assert len(indices) == len(text)
    assert BLANK_INDEX not in indices
    assert all(0 < i < len(VOCABULARY) for i in indices)
    assert decode(indices) == text
    assert encode(" 'a") == [1, 2, 3]
    assert encode("z") == [28]


def test_decode_skips_blanks_without_collapsing() -> None:
    a = VOCABULARY.index("a")
    assert decode([BLANK_INDEX, a, a, BLANK_INDEX, a]) == "aaa"
    assert decode([]) == ""


@pytest.mark.parametrize(
    "bad",
    [
        "A",
        "hello!",
        "4",
        "caf\u00e9",
        # The blank is not a character: a target containing it would corrupt the CTC loss.
        "_",
    ],
)
def test_encode_raises_on_unknown_character(bad: str) -> None:
    with pytest.raises(ValueError, match="not in the vocabulary"):
        encode(bad)


def test_normalised_text_always_encodes() -> None:
    text, _ = normalise("IT'S 3 O'CLOCK \u2014 TIME-FOR T\u00c9A!")
    assert decode(encode(text)) == text


def test_words() -> None:
    assert words(["a bc", "", "d  e"]) == ["a", "bc", "d", "e"]
