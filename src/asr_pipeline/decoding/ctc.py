"""CTC decoding: greedy, and beam search with an optional n-gram language model (flashlight-text).

Both honour each utterance's output length, so padding frames are never decoded. Both take the
model's units (:mod:`asr_pipeline.units`; default: the characters): greedy decoding gives what the
units' best path spells (words, or phones for a phone model), and the lexicon beam search always
gives words, whatever the units, since it spells the LM's words in them.
"""

from __future__ import annotations

import copy
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from asr_pipeline.common.settings import check_settings
from asr_pipeline.decoding.compressed_arpa import CompressedArpa
from asr_pipeline.decoding.flashlight import Search, SearchGraph, load_words
from asr_pipeline.decoding.language_model import arpa_vocabulary, write_arpa
from asr_pipeline.units.base import BLANK, WORD_BOUNDARY, Units
from asr_pipeline.units.characters import CharacterUnits

# flashlight marks word boundaries with a silence token: the units' boundary token goes by this
# name (the characters' space, the phones' and subwords' own |).
_WORD_SEPARATOR = WORD_BOUNDARY
_CHARACTERS = CharacterUnits()


def greedy_decode(
    log_probs: torch.Tensor, lengths: torch.Tensor, units: Units = _CHARACTERS
) -> list[str]:
    """Best path of ``(B, T, C)`` log-probabilities: argmax, merge repeats, drop blanks; in the
    units' own form (:meth:`Units.greedy_text`)."""
    best = log_probs.argmax(dim=-1)
    texts = []
    for path, length in zip(best, lengths.tolist(), strict=True):
        collapsed = torch.unique_consecutive(path[:length])
        texts.append(units.greedy_text(collapsed.tolist()))
    return texts


# The tuning grid under ``beam_search.tune`` (null: no tuning), read by the training pipeline.
TUNE_SETTINGS = frozenset(
    {"split", "lm_weight", "word_score", "batch_seconds", "max_utterances", "workers"}
)


# How the language_model pipeline builds the LM, beside the fields the decoder keeps.
LM_BUILD_SETTINGS = frozenset({"lm_prune", "lm_source", "general_lm_prune"})


@dataclass(frozen=True)
class BeamSearchConfig:
    """The beam search: ``beam_search`` in ``conf/base/parameters_beam_search.yml``.

    No defaults: that YAML is their one source (a bundle stores every field).
    """

    beam_size: int
    lm_weight: float
    word_score: float
    lm_order: int
    # Common words of general text (``word_frequencies``) that the LM knows beside the transcripts'.
    background_words: int
    lexicon: bool

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> BeamSearchConfig:
        """The ``beam_search`` parameters, without the tuning grid (``tune``), which is checked.

        Unknown keys are refused, here and in ``tune``, so that a misspelt setting fails the run
        instead of being ignored.
        """
        names = {f.name for f in fields(cls)}
        known = names | LM_BUILD_SETTINGS | {"tune"}
        check_settings("beam_search", params, known=known, required=names)
        if params.get("tune"):  # null or empty: no tuning
            check_settings("beam_search.tune", params["tune"], TUNE_SETTINGS, TUNE_SETTINGS)
        return cls(**{k: v for k, v in params.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flashlight_token(units: Units, token: str) -> str:
    return _WORD_SEPARATOR if token == units.boundary else token


def lexicon_of(words: Sequence[str], units: Units = _CHARACTERS) -> dict[str, list[list[str]]]:
    """Each word's spellings in the units, in flashlight's tokens (each ends with the word
    separator, but for subword units saved before they had one). Words the units cannot spell
    are left out: the beam search cannot produce them."""
    spellings = units.spellings(sorted(set(words)))
    if units.boundary == _WORD_SEPARATOR:
        return spellings
    # the boundary only ever ends a spelling
    return {
        word: [[*s[:-1], _WORD_SEPARATOR] if s[-1] == units.boundary else s for s in variants]
        for word, variants in spellings.items()
    }


def write_lexicon(words: Sequence[str], path: Path, units: Units = _CHARACTERS) -> Path:
    """:func:`lexicon_of` as a flashlight lexicon file (a line per spelling)."""
    lines = [
        f"{word} {' '.join(spelling)}"
        for word, variants in lexicon_of(words, units).items()
        for spelling in variants
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class BeamSearchDecoder:
    """flashlight's CTC beam search (as torchaudio assembles it), with or without a lexicon, with
    a KenLM model.

    With a lexicon, phones and subwords give the words the search chose. Characters give the best
    token path as they always have: it also keeps a last word the search has not closed with its
    word separator (the targets end without one), and changing that would change every character
    model's figures. Without a lexicon: the best token path in the units' own form (only for
    units that spell words).

    A phone or subword spelling ends with ``|`` but a transcript does not, so the search could
    leave the last word unsaid: a closing ``|`` frame is added after each utterance's last frame.
    """

    def __init__(
        self,
        config: BeamSearchConfig,
        lm_path: str | Path | None = None,
        lexicon_path: str | Path | None = None,
        units: Units = _CHARACTERS,
        lexicon: Mapping[str, list[list[str]]] | None = None,
    ) -> None:
        """``lexicon`` (each word's spellings in flashlight's tokens: :func:`lexicon_of`) or
        ``lexicon_path`` (the same as a file: :func:`write_lexicon`); neither: no lexicon."""
        if lexicon is None and lexicon_path is not None:
            lexicon = load_words(str(lexicon_path))
        if lexicon is None and not units.greedy_gives_words:
            raise ValueError(
                f"{units.kind} units need the lexicon beam search to give words "
                "(beam_search.lexicon: true)"
            )
        self.units = units
        self._words = lexicon is not None and not isinstance(units, CharacterUnits)
        self._close = self._words and units.spellings_end_with_boundary
        tokens = [_flashlight_token(units, token) for token in units.tokens]
        # the lexicon, its trie and the LM: read once, shared by every decoder of with_settings
        self._graph = SearchGraph(tokens, BLANK, _WORD_SEPARATOR, lm_path, lexicon=lexicon)
        self._settings = config
        self._idle: list[Search] = [self._searching()]
        self._pool_lock = threading.Lock()

    def _searching(self) -> Search:
        config = self._settings
        lm_weight = config.lm_weight if self._graph.has_lm else 0.0
        return self._graph.search(config.beam_size, lm_weight, config.word_score)

    @contextmanager
    def _a_search(self) -> Iterator[Search]:
        """An idle search, or a new one when every search is busy.

        flashlight keeps a decoding's state in its decoder object, so two threads must never
        share one; the graph (lexicon, trie, LM) is only read, so searches over it cost
        microseconds to make. The pool grows to the number of threads that decode at once (a
        server's worker threads) and no further: there is no lock around the decoding itself.

        flashlight-text's Python binding keeps the GIL while it decodes, so threads of one
        process overlap a search with other threads' acoustic models (torch releases the GIL),
        not with other searches: to use every core, serve with several processes
        (``mlflow models serve --workers N``, or ``MLFLOW_MODELS_WORKERS``).
        """
        with self._pool_lock:
            search = self._idle.pop() if self._idle else self._searching()
        try:
            yield search
        finally:
            with self._pool_lock:
                self._idle.append(search)

    @property
    def searches(self) -> int:
        """How many searches the pool holds while none is in use (its peak concurrency)."""
        return len(self._idle)

    def with_settings(self, config: BeamSearchConfig) -> BeamSearchDecoder:
        """This decoder's LM, lexicon and units with another beam size, LM weight and word
        score (``config``'s; its other fields are not read), built in microseconds.

        Nothing is read again, so the tuning grid costs one LM load, not one per pair; it decodes
        exactly like a decoder built afresh with ``config``.
        """
        decoder = copy.copy(self)
        decoder._settings = config
        decoder._idle = [decoder._searching()]
        decoder._pool_lock = threading.Lock()
        return decoder

    @classmethod
    def from_arpa(
        cls, config: BeamSearchConfig, lm_arpa: str | CompressedArpa, units: Units = _CHARACTERS
    ) -> BeamSearchDecoder:
        """A decoder over an ARPA LM, as text or compressed (with ``config.lexicon``, the LM's
        words spelled in ``units``).

        KenLM reads the LM from a file while the decoder is built, so the file lives only that
        long; the lexicon goes to flashlight as it is, never through a file. Decoders with other
        settings over the same LM come from :meth:`with_settings`.
        """
        lexicon = lexicon_of(arpa_vocabulary(lm_arpa), units) if config.lexicon else None
        with tempfile.TemporaryDirectory(prefix="asr-lm-") as folder:
            lm_path = write_arpa(lm_arpa, Path(folder) / "lm.arpa")
            return cls(config, lm_path, units=units, lexicon=lexicon)

    def _closed(
        self, log_probs: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``log_probs`` with a frame that surely says the word boundary after each utterance's
        last frame (padding beyond it is never read)."""
        frame = torch.full((log_probs.shape[-1],), -1e4)
        frame[self.units.index[self.units.boundary]] = 0.0
        closed = torch.cat([log_probs, frame.expand(len(log_probs), 1, -1)], dim=1)
        closed[torch.arange(len(lengths)), lengths.long()] = frame
        return closed, lengths + 1

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        log_probs, lengths = log_probs.float().cpu(), lengths.cpu()
        if self._close:
            log_probs, lengths = self._closed(log_probs, lengths)
        with self._a_search() as search:
            hypotheses = search(log_probs.contiguous(), lengths.int())
        texts = []
        for best in hypotheses:
            if best is None:
                texts.append("")
            elif self._words:
                texts.append(" ".join(best[1]))
            else:
                texts.append(self.units.greedy_text(best[0]))
        return texts
