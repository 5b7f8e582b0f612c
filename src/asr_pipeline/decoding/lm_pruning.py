"""Pruning a Kneser-Ney word LM by counts (KenLM's ``--prune``), keeping it a valid, normalised
ARPA model.

N-grams seen at most a threshold's count (adjusted counts below the highest order) are left out,
except the contexts and suffixes of kept longer n-grams (an ARPA reader needs both). A kept
n-gram keeps its interpolated probability, taken with the pruned lower orders; each context's
backoff weight becomes ``(1 - sum of its kept n-grams' P) / (1 - sum of the lower order's P of
the same words)``, so every context still sums to one. KenLM's ``lmplz`` is not installable as a
Python package, hence these few functions beside the estimator.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

Ngram = tuple[str, ...]


def prune_thresholds(prune: Sequence[int], order: int) -> list[int]:
    """One threshold per order: the last given one repeats; 0 for unigrams; never decreasing (a
    kept n-gram keeps its context, so a lower threshold above would prune nothing)."""
    given = list(prune) or [0]
    if given[0] != 0 or any(b < a for a, b in zip(given, given[1:], strict=False)):
        raise ValueError(f"prune must start with 0 and never decrease, got {list(prune)}")
    return (given + [given[-1]] * order)[:order]


def kept_ngrams(counts: list[Counter[Ngram]], thresholds: list[int]) -> list[set[Ngram]]:
    """Per order, the n-grams above their threshold, and every context and suffix of a kept
    longer n-gram (an ARPA file needs both)."""
    kept: list[set[Ngram]] = [set() for _ in counts]
    for k in range(len(counts) - 1, -1, -1):
        kept[k] = {gram for gram, count in counts[k].items() if count > thresholds[k]}
        if k + 1 < len(counts):
            kept[k] |= {gram[:-1] for gram in kept[k + 1]} | {gram[1:] for gram in kept[k + 1]}
    return kept


def lower_order(
    probs: list[dict[Ngram, float]], backoffs: list[dict[Ngram, float]], pruned: bool
) -> Callable[[Ngram], float]:
    """``P`` of an n-gram one order down: as stored when nothing below was pruned, else through
    ARPA backoff (a pruned n-gram's probability is its context's weight times the lower one's)."""
    if not pruned:
        return probs[-1].__getitem__
    return lambda gram: _lookup(probs, backoffs, gram)


def _lookup(
    probs: list[dict[Ngram, float]], backoffs: list[dict[Ngram, float]], gram: Ngram
) -> float:
    """``P(gram[-1] | gram[:-1])`` with ARPA backoff semantics over the orders built so far."""
    k = len(gram) - 1
    if gram in probs[k]:
        return probs[k][gram]
    return backoffs[k - 1].get(gram[:-1], 1.0) * _lookup(probs, backoffs, gram[1:])


def pruned(
    prob: dict[Ngram, float],
    gamma: dict[Ngram, float],
    kept: set[Ngram],
    lower: Callable[[Ngram], float] | None,
) -> tuple[dict[Ngram, float], dict[Ngram, float]]:
    """One order's kept n-grams, and the backoff weights that normalise each context again."""
    assert lower is not None, "unigrams are never pruned"
    prob = {gram: p for gram, p in prob.items() if gram in kept}
    mass: defaultdict[Ngram, float] = defaultdict(float)
    lower_mass: defaultdict[Ngram, float] = defaultdict(float)
    for gram, p in prob.items():
        mass[gram[:-1]] += p
        lower_mass[gram[:-1]] += lower(gram[1:])
    weights = {
        context: max(1.0 - mass[context], 1e-12) / max(1.0 - lower_mass[context], 1e-12)
        for context in gamma
    }
    return prob, weights
