"""Subword units: a sentencepiece model (BPE or unigram) trained on the training transcripts.

Subwords suit more data than the shared sample: fewer, longer targets per second of speech, and
a vocabulary size to turn. The trained sentencepiece model travels as its serialized bytes in the
units (so in the model bundle); nothing else is needed to encode or to spell a word.

Layout: ``[blank, |, the pieces but <unk>]``. The targets put ``|`` between words although
sentencepiece's ``▁`` already marks where a word starts, and a word's lexicon spelling is its
pieces followed by ``|``, as for characters and phones: flashlight's lexicon decoder ends a word
when its spelling's last token is first read, and scores every later frame of that token as
silence, so a model that holds a word's last piece over several frames (most do) would be
decoded wrongly without a token after it (docs/accuracy.md). Units saved before this
(``word_separated`` absent from the bundle) keep their targets without ``|`` and decode as they
did. Every normalised character is a required piece, so every transcript can be encoded,
whatever letters the training transcripts happened to have.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

from asr_pipeline.units.base import BLANK, WORD_BOUNDARY, Units, UnitsError
from asr_pipeline.units.characters import CHARACTERS

MODEL_TYPES = ("bpe", "unigram")
_WORD_START = "\u2581"  # sentencepiece's ▁
_BOUNDARY_ID = 1  # WORD_BOUNDARY's index in the layout above


class SubwordUnits(Units):
    """The pieces of a sentencepiece model (its serialized bytes: ``model``)."""

    kind = "subwords"

    def __init__(self, model: bytes, model_type: str, word_separated: bool = True) -> None:
        """``word_separated``: ``|`` between the words of the targets and after each lexicon
        spelling; only units saved before it existed are without (see the module docstring)."""
        import sentencepiece

        self.model, self.model_type = bytes(model), model_type
        self.word_separated = word_separated
        self._processor = sentencepiece.SentencePieceProcessor(model_proto=self.model)
        if self._processor.unk_id() != 0:
            raise ValueError("the sentencepiece model must have <unk> as its piece 0")
        pieces = [self._processor.id_to_piece(i) for i in range(1, len(self._processor))]
        super().__init__((BLANK, WORD_BOUNDARY, *pieces), boundary=WORD_BOUNDARY)

    @property
    def spellings_end_with_boundary(self) -> bool:  # type: ignore[override]
        """Only word-separated units end a spelling with ``|``."""
        return self.word_separated

    def _ids(self, texts: list[str]) -> list[list[int]]:
        """Token indices (sentencepiece id + 1) of each text, with ``|`` between its words when
        the units are word-separated; -1 where a piece is unknown."""
        encoded = []
        for ids in self._processor.encode(texts, out_type=int):
            tokens = []
            for i in ids:
                starts_word = self.tokens[i + 1].startswith(_WORD_START) if i else False
                if self.word_separated and starts_word and tokens:
                    tokens.append(_BOUNDARY_ID)
                tokens.append(i + 1 if i else -1)
            encoded.append(tokens)
        return encoded

    def encode(self, text: str) -> list[int]:
        (ids,) = self._ids([text])
        if -1 in ids:
            raise UnitsError(f"{text!r} has characters the subword model does not know")
        return ids

    def greedy_text(self, ids: Iterable[int]) -> str:
        # | is a space between words; units saved before it was a target never meant it
        boundary = " " if self.word_separated else ""
        pieces = "".join(boundary if i == _BOUNDARY_ID else self.tokens[i] for i in ids if i)
        return " ".join(pieces.replace(_WORD_START, " ").split())

    def spellings(self, words: Iterable[str]) -> dict[str, list[list[str]]]:
        words = [w for w in words if w and " " not in w]
        end = [WORD_BOUNDARY] if self.word_separated else []
        return {
            word: [[self.tokens[i] for i in ids] + end]
            for word, ids in zip(words, self._ids(words), strict=True)
            if ids and -1 not in ids
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tokens": list(self.tokens),
            "model_type": self.model_type,
            "sentencepiece": self.model,
            # left out when False, so that units saved before keep their digest (and checkpoints)
            **({"word_separated": True} if self.word_separated else {}),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SubwordUnits:
        word_separated = values.get("word_separated", False)  # saved before it existed: False
        units = cls(values["sentencepiece"], values["model_type"], word_separated)
        if list(units.tokens) != list(values["tokens"]):
            raise ValueError("the subword tokens do not match their sentencepiece model")
        return units


def train_subwords(texts: Sequence[str], vocabulary_size: int, model_type: str) -> SubwordUnits:
    """A sentencepiece model of ``texts`` (normalised transcripts), as units.

    ``vocabulary_size`` is an upper bound: a few hours of transcripts may not support it
    (sentencepiece then stops at what they do). One thread, so that every process of a
    distributed run trains the same model from the same transcripts.
    """
    import sentencepiece

    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown subword model_type {model_type!r}; use one of {MODEL_TYPES}")
    sentences = [text for text in texts if text.strip()]
    if not sentences:
        raise ValueError("no transcripts to train the subword model on")
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=vocabulary_size,
            model_type=model_type,
            character_coverage=1.0,
            required_chars="".join(ch for ch in CHARACTERS if ch != " "),
            hard_vocab_limit=False,
            normalization_rule_name="identity",
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as error:
        message = f"cannot train {vocabulary_size} {model_type} subwords: {error}"
        raise ValueError(message) from None
    return SubwordUnits(model.getvalue(), model_type)
