"""Subword units: a sentencepiece model (BPE or unigram) trained on the training transcripts.

Subwords suit more data than the shared sample: fewer, longer targets per second of speech, and
a vocabulary size to turn. The trained sentencepiece model travels as its serialized bytes in the
units (so in the model bundle); nothing else is needed to encode or to spell a word.

Layout: ``[blank, |, the pieces but <unk>]``. sentencepiece's ``▁`` marks where a word starts, so
targets need no boundary token; ``|`` is there because flashlight's lexicon decoder needs a silence
token (a model learns never to emit it). A word's lexicon spelling is its pieces, exactly the
pieces of the targets. Every normalised character is a required piece, so every transcript can
be encoded, whatever letters the training transcripts happened to have.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

from asr_pipeline.units.base import BLANK, WORD_BOUNDARY, Units, UnitsError
from asr_pipeline.units.characters import CHARACTERS

MODEL_TYPES = ("bpe", "unigram")
_WORD_START = "\u2581"  # sentencepiece's ▁


class SubwordUnits(Units):
    """The pieces of a sentencepiece model (its serialized bytes: ``model``)."""

    kind = "subwords"
    spellings_end_with_boundary = False

    def __init__(self, model: bytes, model_type: str) -> None:
        import sentencepiece

        self.model, self.model_type = bytes(model), model_type
        self._processor = sentencepiece.SentencePieceProcessor(model_proto=self.model)
        if self._processor.unk_id() != 0:
            raise ValueError("the sentencepiece model must have <unk> as its piece 0")
        pieces = [self._processor.id_to_piece(i) for i in range(1, len(self._processor))]
        super().__init__((BLANK, WORD_BOUNDARY, *pieces), boundary=WORD_BOUNDARY)

    def _ids(self, texts: list[str]) -> list[list[int]]:
        """Token indices (sentencepiece id + 1) of each text; -1 where a piece is unknown."""
        return [
            [i + 1 if i else -1 for i in ids] for ids in self._processor.encode(texts, out_type=int)
        ]

    def encode(self, text: str) -> list[int]:
        (ids,) = self._ids([text])
        if -1 in ids:
            raise UnitsError(f"{text!r} has characters the subword model does not know")
        return ids

    def greedy_text(self, ids: Iterable[int]) -> str:
        pieces = "".join(self.tokens[i] for i in ids if i > 1)
        return " ".join(pieces.replace(_WORD_START, " ").split())

    def spellings(self, words: Iterable[str]) -> dict[str, list[list[str]]]:
        words = [w for w in words if w and " " not in w]
        return {
            word: [[self.tokens[i] for i in ids]]
            for word, ids in zip(words, self._ids(words), strict=True)
            if ids and -1 not in ids
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tokens": list(self.tokens),
            "model_type": self.model_type,
            "sentencepiece": self.model,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SubwordUnits:
        units = cls(values["sentencepiece"], values["model_type"])
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
