"""A small word n-gram language model in ARPA text, for the CTC beam-search decoder.

KenLM's ``lmplz`` is not available as a Python package, but flashlight-text bundles KenLM's
*reader*, which loads ARPA text. So the model is estimated here, in pure Python.

Smoothing: interpolated Kneser-Ney with one absolute discount ``D`` per order (not modified KN), as
in Chen & Goodman (1998) and KenLM's ``lmplz``:

* the highest order, and any n-gram starting with ``<s>``, uses raw counts; every other lower-order
  n-gram uses its continuation count (the number of distinct words seen to its left), because a
  lower order is only consulted when backing off and should reward words that follow many contexts;
* ``P(w | h) = max(c(h w) - D, 0) / c(h .) + gamma(h) * P(w | h')`` where ``h'`` drops the oldest
  word and ``gamma(h) = D * N1+(h .) / c(h .)``; the unigram level interpolates with the uniform
  distribution over the vocabulary (all words, ``</s>`` and ``<unk>``; never ``<s>``), so ``<unk>``
  gets the leftover mass of the unigram level; or, given word frequencies of general text (a
  *background*), with those frequencies: their words join the vocabulary and share the unigram
  level's leftover mass in proportion to how common they are, so that beam search can spell common
  words that the transcripts never contain;
* ``D = n1 / (n1 + 2 n2)`` from the count-of-counts of that order, clipped to ``[0.05, 0.95]``;
  ``0.5`` when both are zero.

Because the model is interpolated, ``gamma(h)`` is exactly the ARPA backoff weight of ``h`` and the
stored probability of ``h w`` is the interpolated one, so reading the file with ARPA backoff
semantics gives back the same, properly normalised, distribution.

Pruning by counts (``prune``, :mod:`asr_pipeline.decoding.lm_pruning`) keeps the model normalised
and makes the file, the bundle and every serving worker's decoder smaller for large transcript
corpora (most trigrams of a large corpus are seen once).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from asr_pipeline.decoding.compressed_arpa import CompressedArpa
from asr_pipeline.decoding.lm_pruning import (
    Ngram,
    kept_ngrams,
    lower_order,
    prune_thresholds,
    pruned,
)
from asr_pipeline.units.characters import normalise

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
MAX_ORDER = 6  # the KenLM compiled into flashlight-text rejects higher orders
_DISCOUNT_RANGE = (0.05, 0.95)
_NO_PROB = -99.0  # ARPA convention for <s>, which is never predicted


def build_arpa(
    sentences: Iterable[str],
    order: int = 3,
    discount: float | None = None,
    background: Mapping[str, float] | None = None,
    prune: Sequence[int] = (),
) -> str:
    """Interpolated Kneser-Ney word n-gram LM over ``sentences``, as ARPA text.

    ``sentences`` are already normalised: lower-case words separated by spaces (blank ones are
    skipped). ``discount`` overrides the per-order estimate with one value in (0, 1) for all orders.
    ``background`` maps normalised words to their frequencies in general text (any positive scale):
    the unigram level interpolates with them instead of with the uniform distribution.
    ``prune`` gives per order (unigrams first, which are never pruned: 0) the count at or below
    which n-grams are left out, never decreasing; the last one holds for the orders after it.
    The result has ``<s>`` (log10 prob -99), ``</s>`` and ``<unk>``, log10 probabilities, and a
    backoff weight on every n-gram that is the context of a longer one. A unigram model is written
    with an empty ``\\2-grams:`` section, since KenLM refuses a file of order 1.
    """
    if not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order must be between 1 and {MAX_ORDER}, got {order}")
    if discount is not None and not 0.0 < discount < 1.0:
        raise ValueError(f"discount must be in (0, 1), got {discount}")

    thresholds = prune_thresholds(prune, order)
    counts = _adjusted_counts(sentences, order)
    kept = kept_ngrams(counts, thresholds) if any(thresholds) else []
    vocabulary = {gram[0] for gram in counts[0]} - {BOS} | {EOS, UNK} | set(background or ())
    base = _base_distribution(vocabulary, background)
    discounts = [
        discount if discount is not None else _estimate_discount(level) for level in counts
    ]

    probs: list[dict[Ngram, float]] = []
    backoffs: list[dict[Ngram, float]] = []  # backoffs[k]: gammas of (k+1)-word contexts
    for k, level in enumerate(counts):
        lower = lower_order(probs, backoffs, pruned=any(thresholds[:k])) if k else None
        prob, gamma = _interpolate(level, discounts[k], lower, base)
        if any(thresholds[: k + 1]):
            prob, gamma = pruned(prob, gamma, kept[k], lower)
        probs.append(prob)
        if k:
            backoffs.append(gamma)
        else:  # unseen words (<unk>, background words) get only their share of the leftover mass
            for word in vocabulary:
                prob.setdefault((word,), gamma[()] * base[word])

    return _format_arpa(probs, backoffs)


def common_words(frequencies: Iterable[tuple[str, float]], size: int) -> dict[str, float]:
    """The ``size`` most frequent words of a ``(word, frequency)`` list, in the model's characters.

    Each word is normalised like a transcript; those with characters the model cannot spell
    (digits, other scripts), or that fall apart into several words (``co-op``), are skipped, and
    spellings that normalise alike (``café``, ``cafe``) add up. The list is read in order, so it
    must come most frequent first.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    words: dict[str, float] = {}
    for word, frequency in frequencies:
        text, unknown = normalise(str(word))
        if unknown or not text or " " in text:
            continue
        if text not in words and len(words) == size:
            break
        words[text] = words.get(text, 0.0) + float(frequency)
    return words


def arpa_vocabulary(arpa: str | CompressedArpa) -> list[str]:
    """The words of an ARPA model (its 1-grams without ``<s>``, ``</s>``, ``<unk>``).

    A lexicon built from them lets beam search spell exactly the words the LM knows. Only the
    1-gram section is read: splitting a 100 MB LM's text at it copied nearly all of it.
    """
    if isinstance(arpa, CompressedArpa):
        return _unigram_words(arpa.lines())
    start = arpa.find(UNIGRAM_HEADER)
    end = arpa.find("\\", start + len(UNIGRAM_HEADER)) if start >= 0 else -1
    return _unigram_words(arpa[max(start, 0) : end if end >= 0 else len(arpa)].splitlines())


UNIGRAM_HEADER = "\\1-grams:"


def _unigram_words(lines: Iterable[str]) -> list[str]:
    """The words of the 1-gram section among ``lines`` (it ends at the next ``\\`` line)."""
    words, in_section, seen = [], False, False
    for raw in lines:
        line = raw.strip()
        if line.startswith("\\"):
            if in_section:
                break
            in_section = seen = line == UNIGRAM_HEADER
        elif in_section and line:
            words.append(line.split("\t")[1])
    if not seen:
        raise ValueError("not an ARPA language model: it has no \\1-grams: section")
    return [word for word in words if word not in {"<s>", "</s>", "<unk>"}]


def write_arpa(arpa: str | CompressedArpa, path: str | Path, chunk_chars: int = 1 << 22) -> Path:
    """Write an ARPA LM to ``path`` as text (UTF-8), a few MB at a time.

    ``Path.write_text`` encodes the whole text first: a second copy of a 100 MB LM at once.
    """
    if isinstance(arpa, CompressedArpa):
        return arpa.write(path)
    path = Path(path)
    with path.open("w", encoding="utf-8") as handle:
        for start in range(0, len(arpa), chunk_chars):
            handle.write(arpa[start : start + chunk_chars])
    return path


def _adjusted_counts(sentences: Iterable[str], order: int) -> list[Counter[Ngram]]:
    """Raw counts at the highest order and for ``<s>`` n-grams, continuation counts elsewhere."""
    top: Counter[Ngram] = Counter()
    starts: list[Counter[Ngram]] = [Counter() for _ in range(order)]
    n_sentences = 0
    for sentence in sentences:
        words = sentence.split()
        if not words:
            continue
        if BOS in words or EOS in words:
            raise ValueError(f"sentence contains a reserved token: {sentence!r}")
        n_sentences += 1
        tokens = (BOS, *words, EOS)
        top.update(zip(*(tokens[i:] for i in range(order)), strict=False))
        # A sentence shorter than `order` still contributes its whole self, which starts with <s>
        # and therefore keeps its raw count at every lower order.
        for k in range(1, min(order, len(tokens) + 1)):
            starts[k - 1][tokens[:k]] += 1
    if not n_sentences:
        raise ValueError("no sentences to build a language model from")

    counts: list[Counter[Ngram]] = [Counter() for _ in range(order)]
    counts[-1] = top
    for k in range(order - 1, 0, -1):
        level = Counter(gram[1:] for gram in counts[k])  # distinct left extensions
        level.update(starts[k - 1])  # n-grams starting with <s> have no left extension
        counts[k - 1] = level
    return counts


def _estimate_discount(level: Counter[Ngram]) -> float:
    """``n1 / (n1 + 2 n2)`` from the count-of-counts; ``<s>`` as a unigram is not a real event."""
    n1 = n2 = 0
    for gram, count in level.items():
        if gram == (BOS,):
            continue
        if count == 1:
            n1 += 1
        elif count == 2:
            n2 += 1
    if n1 + n2 == 0:
        return 0.5
    low, high = _DISCOUNT_RANGE
    return min(max(n1 / (n1 + 2 * n2), low), high)


def _base_distribution(
    vocabulary: set[str], background: Mapping[str, float] | None
) -> dict[str, float]:
    """What the unigram level interpolates with: uniform, or the background frequencies.

    Vocabulary words missing from the background (and ``</s>``, ``<unk>``) get the frequency of
    its rarest word.
    """
    if not background:
        return dict.fromkeys(vocabulary, 1.0 / len(vocabulary))
    reserved = {BOS, EOS, UNK} & set(background)
    if reserved:
        raise ValueError(f"background words include reserved tokens: {sorted(reserved)}")
    if min(background.values()) <= 0:
        raise ValueError("background frequencies must be positive")
    floor = min(background.values())
    weights = {word: background.get(word, floor) for word in vocabulary}
    total = math.fsum(weights.values())
    return {word: weight / total for word, weight in weights.items()}


def _interpolate(
    level: Counter[Ngram],
    discount: float,
    lower: Callable[[Ngram], float] | None,
    base: dict[str, float],
) -> tuple[dict[Ngram, float], dict[Ngram, float]]:
    """Interpolated probabilities of one order and the weights ``gamma`` of its contexts."""
    totals: defaultdict[Ngram, int] = defaultdict(int)
    types: defaultdict[Ngram, int] = defaultdict(int)
    for gram, count in level.items():
        if gram == (BOS,):
            continue
        totals[gram[:-1]] += count
        types[gram[:-1]] += 1
    gamma = {h: discount * types[h] / totals[h] for h in totals}

    prob: dict[Ngram, float] = {}
    for gram, count in level.items():
        if gram == (BOS,):
            continue
        context = gram[:-1]
        # The suffix exists at the lower order: it has at least this n-gram as a left extension.
        backoff = lower(gram[1:]) if lower is not None else base[gram[-1]]
        prob[gram] = (count - discount) / totals[context] + gamma[context] * backoff
    return prob, gamma


def _format_arpa(probs: list[dict[Ngram, float]], backoffs: list[dict[Ngram, float]]) -> str:
    """ARPA text: header counts, one section per order, backoffs only where a context needs one."""
    order = len(probs)
    sections: list[list[str]] = []
    for k, prob in enumerate(probs):
        gammas = backoffs[k] if k < order - 1 else {}
        entries = sorted(prob.items(), key=_unigram_key if k == 0 else None)
        if k == 0:
            entries.insert(1, ((BOS,), 0.0))  # after <unk>; its probability is never used
        lines = []
        for gram, p in entries:
            logprob = _NO_PROB if gram == (BOS,) else math.log10(p)
            line = f"{logprob:.7g}\t{' '.join(gram)}"
            if gram in gammas:
                line += f"\t{math.log10(gammas[gram]):.7g}"
            lines.append(line)
        sections.append(lines)
    if order == 1:
        # KenLM only implements order >= 2; an empty bigram section keeps the distribution.
        sections.append([])

    out = ["\\data\\"]
    out += [f"ngram {k + 1}={len(lines)}" for k, lines in enumerate(sections)]
    for k, lines in enumerate(sections):
        out += ["", f"\\{k + 1}-grams:", *lines]
    out += ["", "\\end\\", ""]
    return "\n".join(out)


def _unigram_key(item: tuple[Ngram, float]) -> tuple[int, Ngram]:
    """Special tokens first (``<unk>``, then ``</s>``), then words alphabetically."""
    gram = item[0]
    return ({UNK: 0, EOS: 1}.get(gram[0], 2), gram)
