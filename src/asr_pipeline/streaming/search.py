"""The model's beam search fed frame by frame, so that a final result costs only its last frames.

flashlight's decoders are incremental (``decode_begin``, ``decode_step`` as often as frames come,
``decode_end``); :class:`~asr_pipeline.decoding.flashlight.Search` only exposes the whole-utterance
``decode``, which is those three calls in a row. :class:`IncrementalSearch` is that search with
the three calls apart, so that it decodes exactly as the offline one (same options, same graph).

:class:`StreamingBeamSearch` is what a bundle's ``decoder`` entry becomes: the LM, lexicon and
trie read once (:class:`~asr_pipeline.decoding.flashlight.SearchGraph`), shared read-only by
every stream, each of which gets its own cheap :class:`IncrementalSearch`. It is assembled from
the same public pieces as ``BeamSearchDecoder.from_arpa`` (the lexicon of the LM's words spelled
in the model's units, the boundary token as flashlight's word separator) and turns a hypothesis
into text as it does; tests/test_streaming_recognizer.py checks that the two agree on real audio.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import torch

from asr_pipeline.decoding.ctc import BeamSearchConfig, write_lexicon
from asr_pipeline.decoding.flashlight import Search, SearchGraph
from asr_pipeline.decoding.language_model import arpa_vocabulary, write_arpa
from asr_pipeline.model.bundle import bundle_lm
from asr_pipeline.units.base import BLANK, WORD_BOUNDARY, Units
from asr_pipeline.units.characters import CharacterUnits


class IncrementalSearch(Search):
    """A :class:`Search` whose decoding is begun, stepped and ended by the caller."""

    def begin(self) -> None:
        self._decoder.decode_begin()
        self._pending_results = None

    def step(self, emissions: torch.Tensor) -> None:
        """Feed ``(t, C)`` log-probabilities (any number of frames, in order)."""
        if len(emissions) == 0:
            return
        emissions = emissions.float().contiguous()
        self._decoder.decode_step(emissions.data_ptr(), len(emissions), emissions.shape[1])

    def end(self) -> tuple[list[int], list[str]] | None:
        """The best hypothesis of what was fed since :meth:`begin`: its tokens (repeats merged,
        blanks dropped) and words, as ``Search`` gives them; None when there is none."""
        self._decoder.decode_end()
        results = self._decoder.get_all_final_hypothesis()
        if not results:
            return None
        path = (index for index, _ in itertools.groupby(results[0].tokens))
        tokens = [index for index in path if index != self.graph.blank]
        lexicon = self.graph.words
        words = [lexicon.get_entry(w) for w in results[0].words if w >= 0] if lexicon else []
        return tokens, words


class StreamingBeamSearch:
    """A bundle's beam search (its LM and tuned settings), one incremental search per stream."""

    def __init__(self, decoder_entry: dict[str, Any], units: Units) -> None:
        self.config = BeamSearchConfig(**decoder_entry["beam"])
        self.units = units
        if not self.config.lexicon and not units.greedy_gives_words:
            raise ValueError(f"{units.kind} units need the lexicon beam search to give words")
        self._words = self.config.lexicon and not isinstance(units, CharacterUnits)
        self._close = self._words and units.spellings_end_with_boundary
        tokens = [WORD_BOUNDARY if t == units.boundary else t for t in units.tokens]
        lm_arpa = bundle_lm(decoder_entry)
        with tempfile.TemporaryDirectory(prefix="asr-stream-lm-") as folder:
            lm_path = write_arpa(lm_arpa, Path(folder) / "lm.arpa")
            lexicon_path = None
            if self.config.lexicon:
                lexicon_path = write_lexicon(
                    arpa_vocabulary(lm_arpa), Path(folder) / "lexicon.txt", units
                )
            self.graph = SearchGraph(tokens, BLANK, WORD_BOUNDARY, lm_path, lexicon_path)

    def new_search(self) -> IncrementalSearch:
        """A search for one stream (microseconds: the graph is shared)."""
        lm_weight = self.config.lm_weight if self.graph.has_lm else 0.0
        return IncrementalSearch(
            self.graph, self.config.beam_size, lm_weight, self.config.word_score
        )

    def closing_frame(self) -> torch.Tensor:
        """What ``BeamSearchDecoder`` adds after a phone or subword model's last frame (a sure word
        boundary, so the last word is said); no frame for other units."""
        if not self._close:
            return torch.zeros(0, len(self.units.tokens))
        frame = torch.full((1, len(self.units.tokens)), -1e4)
        frame[0, self.units.index[self.units.boundary]] = 0.0
        return frame

    def text(self, best: tuple[list[int], list[str]] | None) -> str:
        """A hypothesis as ``BeamSearchDecoder`` spells it: words, or the characters' path."""
        if best is None:
            return ""
        return " ".join(best[1]) if self._words else self.units.greedy_text(best[0])
