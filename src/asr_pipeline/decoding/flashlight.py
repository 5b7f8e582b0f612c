"""flashlight-text's CTC beam search, assembled so that what it reads from files loads once.

torchaudio's ``ctc_decoder`` reads the lexicon, builds its trie and loads the KenLM model every
time it is called, although only the search options (beam size, LM weight, word score) tell one
decoder from another. With the pipeline's 50,000-word lexicon that is about 1 s per decoder,
nearly all of it the lexicon and its trie (the ARPA file itself loads in about 10 ms), and KenLM
prints a loading banner and progress bar to the C-level stderr each time. Here the lexicon, trie
and LM are a :class:`SearchGraph`, built once; :meth:`SearchGraph.search` makes a search with
given options over it in microseconds, so the tuning grid shares one graph.

The assembly follows torchaudio 2.11's ``_ctc_decoder`` (same dictionaries, same trie scores and
smearing, same option defaults), so a search decodes exactly as ``ctc_decoder`` would.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import torch

from asr_pipeline.common.quiet import quiet_c_stderr

UNK_WORD = "<unk>"
_FLOAT_BYTES = 4
_TRIE_LABELS = 6  # words a node of flashlight's Trie keeps (it drops more, saying so)
logger = logging.getLogger(__name__)


def load_words(path: str | Path) -> dict[str, list[list[str]]]:
    """A flashlight lexicon file as ``{word: [spelling, ...]}`` (flashlight's own reader)."""
    from flashlight.lib.text.dictionary import load_words as read

    return read(str(path))


class SearchGraph:
    """Tokens, the lexicon's words and trie (optional), and the KenLM model (optional).

    Read-only once built: any number of searches may share it. KenLM's loading message (a
    suggestion to build a binary file, and a progress bar) is silenced by sending the C-level
    stderr to ``/dev/null`` only while the model loads; a file KenLM cannot read still raises.
    """

    def __init__(
        self,
        tokens: list[str],
        blank: str,
        separator: str,
        lm_path: str | Path | None = None,
        lexicon_path: str | Path | None = None,
        lexicon: Mapping[str, list[list[str]]] | None = None,
    ) -> None:
        """``lexicon``: each word's spellings in ``tokens``, or ``lexicon_path``: the same as a
        flashlight lexicon file (a line per spelling: the word, then its tokens)."""
        from flashlight.lib.text.decoder import SmearingMode, Trie, ZeroLM
        from flashlight.lib.text.dictionary import Dictionary, create_word_dict

        self.tokens = Dictionary(tokens)
        self.blank = self.tokens.get_index(blank)
        self.separator = self.tokens.get_index(separator)
        self.has_lm = lm_path is not None
        if lexicon_path:
            lexicon = load_words(str(lexicon_path))
        if lexicon:  # flashlight's own reader adds the unknown word; its word dictionary needs it
            lexicon = {UNK_WORD: [], **lexicon}
        self.words = None
        if lexicon:
            self.words = create_word_dict(lexicon)
        elif lm_path is not None:  # torchaudio: the tokens are the LM's words
            size = self.tokens.index_size()
            spelled = {self.tokens.get_entry(i): [[self.tokens.get_entry(i)]] for i in range(size)}
            self.words = create_word_dict({**spelled, UNK_WORD: [[UNK_WORD]]})
        if lm_path is not None:
            from flashlight.lib.text.decoder.kenlm import KenLM

            with quiet_c_stderr():
                self.lm = KenLM(str(lm_path), self.words)
        else:
            self.lm = ZeroLM()
        self.trie = None
        self.dropped_homophones = 0
        if lexicon:
            self.trie = Trie(self.tokens.index_size(), self.separator)
            start = self.lm.start(False)
            scored = []
            for word, spellings in lexicon.items():
                index = self.words.get_index(word)
                scored.append((self.lm.score(start, index)[1], index, spellings))
            # A trie node keeps at most 6 words (homophones, for phones): the likeliest go first,
            # so the ones flashlight drops (with a line on stderr each) are the rarest.
            scored.sort(key=lambda item: -item[0])
            words_at: Counter[tuple[int, ...]] = Counter()
            token_index = {token: i for i, token in enumerate(tokens)}
            with quiet_c_stderr():
                for score, index, spellings in scored:
                    for spelling in spellings:
                        path = tuple(token_index[t] for t in spelling)
                        words_at[path] += 1
                        self.trie.insert(list(path), index, score)
            self.trie.smear(SmearingMode.MAX)
            self.dropped_homophones = sum(max(0, n - _TRIE_LABELS) for n in words_at.values())
            if self.dropped_homophones:
                logger.info(
                    "Beam search lexicon: %d rare spellings left out (more than %d words "
                    "spelled alike)",
                    self.dropped_homophones,
                    _TRIE_LABELS,
                )

    def search(self, beam_size: int, lm_weight: float, word_score: float) -> Search:
        """A beam search over this graph (nearly free: nothing is read or built)."""
        return Search(self, beam_size, lm_weight, word_score)


class Search:
    """One flashlight beam search: a graph and its options; gives the best hypothesis.

    flashlight keeps the search state in the decoder object: one decoding at a time per
    :class:`Search` (the graph itself is only read, so searches in other threads may share it).
    """

    def __init__(self, graph: SearchGraph, beam_size: int, lm_weight: float, word_score: float):
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconDecoder,
            LexiconDecoderOptions,
            LexiconFreeDecoder,
            LexiconFreeDecoderOptions,
        )

        self.graph = graph  # keeps the LM and trie alive as long as the decoder (pybind11)
        common = {
            "beam_size": beam_size,
            "beam_size_token": graph.tokens.index_size(),
            "beam_threshold": 50.0,
            "lm_weight": lm_weight,
            "sil_score": 0.0,
            "log_add": False,
            "criterion_type": CriterionType.CTC,
        }
        if graph.trie is not None:
            options = LexiconDecoderOptions(
                **common, word_score=word_score, unk_score=float("-inf")
            )
            unk = graph.words.get_index(UNK_WORD)
            self._decoder = LexiconDecoder(
                options, graph.trie, graph.lm, graph.separator, graph.blank, unk, [], False
            )
        else:
            options = LexiconFreeDecoderOptions(**common)
            self._decoder = LexiconFreeDecoder(options, graph.lm, graph.separator, graph.blank, [])

    def __call__(
        self, emissions: torch.Tensor, lengths: torch.Tensor
    ) -> list[tuple[list[int], list[str]] | None]:
        """Best hypothesis of each utterance of ``(B, T, C)`` float32 CPU contiguous
        log-probabilities: its tokens (repeats merged, blanks dropped) and its words; ``None``
        when the search found none."""
        if emissions.dtype != torch.float32 or not emissions.is_contiguous() or emissions.ndim != 3:
            raise ValueError("emissions must be a contiguous (B, T, C) float32 tensor")
        n_tokens = emissions.shape[2]
        best: list[tuple[list[int], list[str]] | None] = []
        for b, length in enumerate(lengths.tolist()):
            pointer = emissions.data_ptr() + _FLOAT_BYTES * b * emissions.stride(0)
            results = self._decoder.decode(pointer, int(length), n_tokens)
            if not results:
                best.append(None)
                continue
            path = (index for index, _ in itertools.groupby(results[0].tokens))
            tokens = [index for index in path if index != self.graph.blank]
            lexicon = self.graph.words
            words = [lexicon.get_entry(w) for w in results[0].words if w >= 0] if lexicon else []
            best.append((tokens, words))
        return best
