"""Units from parameters and transcripts (a training run), or from a model bundle's dict.

``units`` in ``conf/base/parameters_units.yml`` is read by :meth:`UnitsConfig.from_params`, which
refuses unknown and missing keys: that YAML is the one source of the defaults. :func:`build_units`
makes the units of a training run and :func:`coverage` counts what they cannot encode (training
utterances left out, words without a pronunciation, those pronounced by the grapheme-to-phoneme
fallback) for the data-quality report beside them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asr_pipeline.common.settings import check_settings
from asr_pipeline.units.base import Units
from asr_pipeline.units.characters import VOCABULARY, CharacterUnits
from asr_pipeline.units.g2p import LetterToSound
from asr_pipeline.units.phones import PhoneUnits
from asr_pipeline.units.subwords import MODEL_TYPES, SubwordUnits, train_subwords

KINDS = ("characters", "phones", "subwords")
# What phone units do with a transcript word the dictionary lacks: guess its pronunciation, or
# leave the utterances that have it out of training.
MISSING_WORDS = ("g2p", "exclude")
# The keys of ``units`` and of its two subsections: each is refused unless known, and required
# (the YAML sets every one).
UNITS_SETTINGS = frozenset({"kind", "phones", "subwords"})
PHONES_SETTINGS = frozenset({"stress", "missing_words"})
SUBWORDS_SETTINGS = frozenset({"vocabulary_size", "model_type"})


@dataclass(frozen=True)
class UnitsConfig:
    """``units``: the kind, and the settings of phones and subwords (read whatever the kind)."""

    kind: str
    stress: bool
    missing_words: str
    vocabulary_size: int
    model_type: str

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> UnitsConfig:
        check_settings("units", params, UNITS_SETTINGS, required=UNITS_SETTINGS)
        check_settings("units.phones", params["phones"], PHONES_SETTINGS, required=PHONES_SETTINGS)
        check_settings(
            "units.subwords", params["subwords"], SUBWORDS_SETTINGS, required=SUBWORDS_SETTINGS
        )
        if params["kind"] not in KINDS:
            raise ValueError(f"unknown units.kind {params['kind']!r}; use one of {KINDS}")
        if params["phones"]["missing_words"] not in MISSING_WORDS:
            raise ValueError(
                f"unknown units.phones.missing_words {params['phones']['missing_words']!r}; "
                f"use one of {MISSING_WORDS}"
            )
        subwords = params["subwords"]
        if subwords["model_type"] not in MODEL_TYPES:
            raise ValueError(
                f"unknown units.subwords.model_type {subwords['model_type']!r}; "
                f"use one of {MODEL_TYPES}"
            )
        if int(subwords["vocabulary_size"]) < 2:
            raise ValueError("units.subwords.vocabulary_size must be at least 2")
        return cls(
            kind=params["kind"],
            stress=bool(params["phones"]["stress"]),
            missing_words=params["phones"]["missing_words"],
            vocabulary_size=int(subwords["vocabulary_size"]),
            model_type=subwords["model_type"],
        )


def build_units(
    config: UnitsConfig,
    train_texts: Sequence[str],
    pronunciations: Iterable[tuple[str, str]] | None = None,
    cover: Iterable[str] = (),
) -> Units:
    """The units of a training run: characters; phones of the ``(word, phones)`` pronunciation
    dictionary; or a subword model trained on the training transcripts (``train_texts``).

    With ``missing_words: g2p``, phones also get guessed pronunciations of the words of
    ``cover`` (the transcripts they must encode) that the dictionary lacks.
    """
    if config.kind == "characters":
        return CharacterUnits()
    if config.kind == "phones":
        if pronunciations is None:
            raise ValueError("phone units need a pronunciation dictionary")
        units = PhoneUnits.from_pronunciations(pronunciations, config.stress)
        missing = {word for text in cover for word in units.missing_words(text)}
        if config.missing_words == "g2p" and missing:
            first = {word: variants[0] for word, variants in units.lexicon.items()}
            units = units.with_guesses(LetterToSound(first).pronounce(missing))
        return units
    return train_subwords(train_texts, config.vocabulary_size, config.model_type)


def units_from_dict(values: Mapping[str, Any]) -> Units:
    """The units a bundle saved (:meth:`Units.to_dict`)."""
    kind = values.get("kind")
    if kind == "characters":
        if list(values["tokens"]) != list(VOCABULARY):
            raise ValueError("the model was trained with another character vocabulary")
        return CharacterUnits()
    if kind == "phones":
        return PhoneUnits.from_dict(dict(values))
    if kind == "subwords":
        return SubwordUnits.from_dict(dict(values))
    raise ValueError(f"unknown kind of units {kind!r}; this code knows {KINDS}")


def coverage(units: Units, texts: Mapping[str, Sequence[str]], top: int = 50) -> dict[str, Any]:
    """What ``units`` cannot encode in each group of ``texts`` (e.g. by split).

    Per group: utterances, those that cannot be encoded (left out of training), word tokens, and
    for phones the words without a pronunciation in the dictionary (tokens and distinct words) and
    how many of those the grapheme-to-phoneme fallback pronounced; then the ``top`` most frequent
    of those words over all groups (with the guess, if any), which a lexicon of your own could add.
    """
    report: dict[str, Any] = {"kind": units.kind, "tokens": len(units.tokens), "splits": {}}
    guessed = units.guessed if isinstance(units, PhoneUnits) else frozenset()
    missing_all: Counter[str] = Counter()
    for name, group in texts.items():
        missing: Counter[str] = Counter()
        excluded = 0
        for text in group:
            if isinstance(units, PhoneUnits):
                missing.update(units.missing_words(text))
                missing.update(word for word in text.split() if word in guessed)
            excluded += not units.can_encode(text)
        missing_all.update(missing)
        report["splits"][name] = {
            "utterances": len(group),
            "utterances_excluded": excluded,
            "words": sum(len(text.split()) for text in group),
            "words_without_pronunciation": sum(missing.values()),
            "distinct_words_without_pronunciation": len(missing),
            "words_pronounced_by_g2p": sum(n for word, n in missing.items() if word in guessed),
        }
    report["most_frequent_words_without_pronunciation"] = {
        word: {"count": n, "g2p": " ".join(units.lexicon[word][0]) if word in guessed else None}
        for word, n in missing_all.most_common(top)
    }
    return report
