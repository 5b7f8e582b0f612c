"""A small grapheme-to-phoneme fallback, learnt from the pronunciation dictionary itself.

The CMU dictionary lacks about 1.7% of the shared sample's training words (names, British
spellings, rare inflections), but those words sit in a third of its utterances: leaving such
utterances out of training costs a third of the data, and a word the lexicon cannot spell is one
the beam search can never say. A rough pronunciation is better than either.

The method is the classic letter-to-sound one (Black, Lenzo & Pagel 1998), without a package:

1. align each dictionary word's letters with its phones, every letter saying nothing, one phone or
   two (``x`` -> ``K S``), by hard EM: Viterbi alignments under letter -> phones probabilities,
   re-estimated from those alignments;
2. a letter of an unknown word says what the same letter said most often in the dictionary in the
   widest context (up to three letters either side) seen there.

Only the contexts of the words asked for are counted, so memory stays small. It learns from an
evenly spaced sample of the dictionary (deterministic): on 1,000 CMU words held out, 40,000 words
give a phone error rate of 10.9% (53% of the words exactly right) in about 11 s on a busy core;
the whole dictionary 9.0% (60%) in 32 s, not worth its time for a fallback.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

# (left, right) letters of context, widest first; (0, 0) is the letter alone.
_CONTEXTS = ((3, 3), (2, 3), (3, 2), (2, 2), (1, 2), (2, 1), (1, 1), (0, 1), (1, 0), (0, 0))
_PAD = "#"
Chunk = tuple[str, ...]  # what one letter says: (), (phone,) or (phone, phone)


def _viterbi(letters: str, phones: Sequence[str], score) -> list[Chunk] | None:
    """The best split of ``phones`` into one chunk per letter, or None when there is none."""
    n, m = len(letters), len(phones)
    best = [[-math.inf] * (m + 1) for _ in range(n + 1)]
    back = [[0] * (m + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for i in range(1, n + 1):
        letter = letters[i - 1]
        for j in range(0, min(m, 2 * i) + 1):
            for k in (0, 1, 2):
                if j - k < 0 or best[i - 1][j - k] == -math.inf:
                    continue
                value = best[i - 1][j - k] + score(letter, tuple(phones[j - k : j]))
                if value > best[i][j]:
                    best[i][j], back[i][j] = value, k
    if best[n][m] == -math.inf:
        return None
    chunks, j = [], m
    for i in range(n, 0, -1):
        k = back[i][j]
        chunks.append(tuple(phones[j - k : j]))
        j -= k
    return chunks[::-1]


def _contexts(word: str, position: int) -> list[tuple[str, str, str]]:
    padded = _PAD * 3 + word + _PAD * 3
    i = position + 3
    return [(padded[i - left : i], padded[i], padded[i + 1 : i + 1 + r]) for left, r in _CONTEXTS]


class LetterToSound:
    """Pronunciations of words a lexicon lacks, learnt from ``lexicon`` (word -> phones)."""

    def __init__(self, lexicon: Mapping[str, Sequence[str]], sample: int = 40_000) -> None:
        words = sorted(w for w in lexicon if len(lexicon[w]) <= 2 * len(w))
        step = max(1, len(words) // sample)
        self.examples = [(w, tuple(lexicon[w])) for w in words[::step]]
        self.probabilities = self._estimate(self._initial_score())

    def _initial_score(self):
        """Letter -> phone scores from co-occurrence in the same word (no alignment yet)."""
        together: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for word, phones in self.examples:
            for letter in word:
                for phone in phones:
                    together[letter][phone] += 1 / len(phones)
        totals = {letter: sum(c.values()) for letter, c in together.items()}

        def score(letter: str, chunk: Chunk) -> float:
            probabilities = [
                (together[letter][p] + 0.01) / (totals.get(letter, 0) + 1) for p in chunk
            ]
            # saying nothing or two phones costs: most letters say one phone
            return sum(map(math.log, probabilities)) + (len(chunk) != 1) * math.log(0.1)

        return score

    def _estimate(self, score) -> dict[str, dict[Chunk, float]]:
        """Letter -> chunk probabilities from the Viterbi alignments under ``score``."""
        counts: defaultdict[str, Counter[Chunk]] = defaultdict(Counter)
        for word, phones in self.examples:
            for letter, chunk in zip(word, _viterbi(word, phones, score) or [], strict=False):
                counts[letter][chunk] += 1
        return {
            letter: {chunk: n / sum(c.values()) for chunk, n in c.items()}
            for letter, c in counts.items()
        }

    def _score(self, letter: str, chunk: Chunk) -> float:
        return math.log(self.probabilities.get(letter, {}).get(chunk, 1e-6))

    def pronounce(self, words: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """A pronunciation of each word (letters it has never seen say nothing)."""
        words = sorted(set(words))
        needed = {key for word in words for i in range(len(word)) for key in _contexts(word, i)}
        said: defaultdict[tuple[str, str, str], Counter[Chunk]] = defaultdict(Counter)
        for word, phones in self.examples:
            chunks = _viterbi(word, phones, self._score)
            for i, chunk in enumerate(chunks or []):
                for key in _contexts(word, i):
                    if key in needed:
                        said[key][chunk] += 1
        pronunciations = {}
        for word in words:
            phones: list[str] = []
            for i in range(len(word)):
                seen = next((said[k] for k in _contexts(word, i) if k in said), Counter())
                if seen:
                    phones.extend(max(seen.items(), key=lambda item: (item[1], item[0]))[0])
            pronunciations[word] = tuple(phones)
        return pronunciations
