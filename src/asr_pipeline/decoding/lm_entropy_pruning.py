"""Relative-entropy pruning of a backoff n-gram LM held in arrays (Stolcke, 1998; SRILM's
``ngram -prune``, which made LibriSpeech's ``3-gram.pruned.1e-7.arpa``).

An n-gram ``h w`` is left out when the model without it, backing off to ``bow'(h) P(w | h')``
with the context's backoff weight re-normalised, differs from the model with it by less than
``threshold`` in relative entropy, weighted by how likely the context is:

    D = -P(h) * ( P(w|h) * [log P'(w|h) - log P(w|h)] + [log bow'(h) - log bow(h)] * (1 - S(h)) )

where ``S(h)`` is the probability the context's stored n-grams hold, and ``P(h)`` is the
context's probability by the chain rule of the model. As in SRILM each n-gram is judged against
the unpruned model, the highest order first; an n-gram that is the context or the backoff of a
kept longer one stays; the backoff weights are computed afresh so that every context sums to one.

Hand-written because SRILM's licence does not allow it here, KenLM's pruning is by counts only
(which a finished LM no longer has), and the Python ARPA tools prune by probability thresholds
that leave the model unnormalised. It runs on the arrays of
:class:`asr_pipeline.decoding.sphinx_lm.SphinxLM`, vectorised: the 3.7 M n-grams of the general
English LM take a few seconds.
"""

from __future__ import annotations

import numpy as np

from asr_pipeline.decoding.sphinx_lm import SphinxLM, SphinxNgrams

_LOG10 = np.log(10.0)


class NgramIndex:
    """The model's n-grams by integer key, to look up probabilities and backoffs of any rows."""

    def __init__(self, lm: SphinxLM) -> None:
        self.size = len(lm.vocabulary)
        self.bos = lm.vocabulary.index("<s>") if "<s>" in lm.vocabulary else -1
        self.tables = []
        for grams in lm.orders:
            keys = self.keys(grams.words)
            order = np.argsort(keys)
            backoff = grams.log10_backoff
            zeros = np.zeros(len(keys))
            self.tables.append(
                (keys[order], grams.log10_prob[order], zeros if backoff is None else backoff[order])
            )

    def keys(self, words: np.ndarray) -> np.ndarray:
        keys = np.zeros(len(words), dtype=np.int64)
        for column in range(words.shape[1]):
            keys = keys * self.size + words[:, column]
        return keys

    def find(self, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each row is stored (or -1) among the n-grams of its order, sorted by key."""
        keys_sorted = self.tables[words.shape[1] - 1][0]
        keys = self.keys(words)
        at = np.minimum(np.searchsorted(keys_sorted, keys), len(keys_sorted) - 1)
        found = keys_sorted[at] == keys
        return np.where(found, at, -1), found

    def backoff(self, words: np.ndarray) -> np.ndarray:
        """log10 backoff weight of each context row (0 where it is not stored)."""
        at, found = self.find(words)
        return np.where(found, self.tables[words.shape[1] - 1][2][at], 0.0)

    def log10_prob(self, words: np.ndarray) -> np.ndarray:
        """log10 P(last word | the others) of each row, backing off where it is not stored."""
        at, found = self.find(words)
        probs = np.where(found, self.tables[words.shape[1] - 1][1][at], 0.0)
        if words.shape[1] == 1 or found.all():
            return probs
        missing = ~found
        backed = self.backoff(words[missing, :-1]) + self.log10_prob(words[missing, 1:])
        probs[missing] = backed
        return probs


def _context_sums(words: np.ndarray, values: np.ndarray, index: NgramIndex) -> np.ndarray:
    """For each row, the sum of ``values`` over the rows that share its context."""
    contexts = index.keys(words[:, :-1])
    unique, inverse = np.unique(contexts, return_inverse=True)
    return np.bincount(inverse, weights=values, minlength=len(unique))[inverse]


def _context_log10_prob(words: np.ndarray, index: NgramIndex) -> np.ndarray:
    """log10 P(h) of each row's context by the chain rule."""
    context = words[:, :-1]
    # a sentence starts once per sentence: <s> (log10 prob -99, never predicted) counts as certain
    total = np.where(context[:, 0] == index.bos, 0.0, index.log10_prob(context[:, :1]))
    for end in range(2, context.shape[1] + 1):
        total = total + index.log10_prob(context[:, :end])
    return total


def _prune_scores(grams: SphinxNgrams, index: NgramIndex) -> np.ndarray:
    """Stolcke's relative-entropy increase of leaving out each n-gram alone."""
    words = grams.words
    log_p = grams.log10_prob * _LOG10
    log_lower = index.log10_prob(words[:, 1:]) * _LOG10
    p, lower = np.exp(log_p), np.exp(log_lower)
    left = 1.0 - _context_sums(words, p, index)  # mass the context leaves to backing off
    left_lower = 1.0 - _context_sums(words, lower, index)
    log_bow = index.backoff(words[:, :-1]) * _LOG10
    log_bow_new = np.log(np.maximum(left + p, 1e-12)) - np.log(
        np.maximum(left_lower + lower, 1e-12)
    )
    p_context = np.exp(_context_log10_prob(words, index) * _LOG10)
    change = p * (log_bow_new + log_lower - log_p) + (log_bow_new - log_bow) * np.maximum(left, 0.0)
    return -p_context * change


def _sorted(lm: SphinxLM, keep: list[np.ndarray]) -> list[SphinxNgrams]:
    """The kept rows of each order, sorted by key (so a row's place is its place in an index)."""
    index = NgramIndex(lm)
    orders = []
    for grams, kept in zip(lm.orders, keep, strict=True):
        words = grams.words[kept]
        order = np.argsort(index.keys(words))
        backoff = None if grams.log10_backoff is None else grams.log10_backoff[kept][order]
        orders.append(SphinxNgrams(words[order], grams.log10_prob[kept][order], backoff))
    return orders


def _renormalised(vocabulary: list[str], orders: list[SphinxNgrams]) -> list[SphinxNgrams]:
    """The same n-grams with backoff weights that make every stored context sum to one, lowest
    order first (a context's weight depends on the lower orders' weights)."""
    for n in range(1, len(orders)):
        context_grams, longer = orders[n - 1], orders[n]
        index = NgramIndex(SphinxLM(vocabulary, orders[:n]))
        at, found = index.find(longer.words[:, :-1])
        p = np.power(10.0, longer.log10_prob[found])
        lower = np.power(10.0, index.log10_prob(longer.words[found, 1:]))
        rows = len(context_grams.log10_prob)
        held = np.bincount(at[found], weights=p, minlength=rows)
        held_lower = np.bincount(at[found], weights=lower, minlength=rows)
        bow = np.log10(np.maximum(1.0 - held, 1e-12)) - np.log10(
            np.maximum(1.0 - held_lower, 1e-12)
        )
        has_children = np.bincount(at[found], minlength=rows) > 0
        orders[n - 1] = SphinxNgrams(
            context_grams.words, context_grams.log10_prob, np.where(has_children, bow, 0.0)
        )
    return orders


def prune(lm: SphinxLM, threshold: float) -> SphinxLM:
    """``lm`` without the n-grams (bigrams and up) whose removal costs less than ``threshold``
    of relative entropy (SRILM's ``-prune``; 1e-7 and 3e-7 are LibriSpeech's published choices).
    Unigrams all stay. 0 keeps every n-gram (the backoff weights are still recomputed; the
    approximate score of an n-gram can be below 0)."""
    if threshold < 0:
        raise ValueError(f"the pruning threshold must be >= 0, got {threshold}")
    index = NgramIndex(lm)
    keep: list[np.ndarray] = [np.ones(len(g.log10_prob), dtype=bool) for g in lm.orders]
    for n in range(lm.order, 1, -1) if threshold > 0 else ():
        grams = lm.orders[n - 1]
        kept = _prune_scores(grams, index) >= threshold
        if n < lm.order:  # the context and the backoff of a kept longer n-gram stay
            longer = lm.orders[n].words[keep[n]]
            needed = np.concatenate([index.keys(longer[:, :-1]), index.keys(longer[:, 1:])])
            kept |= np.isin(index.keys(grams.words), needed)
        keep[n - 1] = kept
    return SphinxLM(lm.vocabulary, _renormalised(lm.vocabulary, _sorted(lm, keep)))
