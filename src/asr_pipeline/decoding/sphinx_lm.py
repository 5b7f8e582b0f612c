"""CMU Sphinx's binary trie n-gram LM (pocketsphinx's ``en-us.lm.bin``) read into ARPA text.

The pocketsphinx wheel ships a general-English 3-gram LM (72,547 words, 2.05 M bigrams, 1.67 M
trigrams; BSD licence, as pocketsphinx) in Sphinx's binary trie format, which only Sphinx reads.
pocketsphinx 5.1.1's own ARPA writer (``NGramModel.write``) crashes in its trigram pass, after
the bigrams, and no other library reads the format, so it is read here, with numpy. The layout
(``src/lm/lm_trie.c``, ``lm_trie_quant.c``, ``ngram_model_trie.c`` of pocketsphinx) is KenLM's
quantised trie, little-endian:

* the header ``Trie Language Model``, the order (one byte), the n-gram counts (``uint32`` each);
* the quantisation tables: one ``int32``, then 2^16 ``float32`` probabilities and 2^16 backoffs
  for every middle order, and 2^16 probabilities for the highest order;
* the unigrams: ``counts[0] + 1`` records of ``(float32 prob, float32 backoff, uint32 next)``,
  where ``next`` opens the word's range of bigrams;
* the n-grams as bit-packed records, each order's array after the other. The trie is *reversed*:
  a bigram record under unigram ``w`` holds the word *before* ``w``, a trigram record under the
  bigram ``(v, w)`` the word before ``v``. A middle record is ``word | backoff index (16 bits) |
  probability index (16 bits) | first child``, with the child range ending where the next
  record's begins; a highest-order record is ``word | probability index``;
* the words: a ``uint32`` byte count, then the words NUL-separated in index order.

Log-probabilities are stored in Sphinx's ``logmath`` units (log base 1.0001); ARPA wants log10.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADER = b"Trie Language Model"
_QUANT_BITS = 16
_LOG10_OF_BASE = math.log10(1.0001)  # pocketsphinx's default logmath base
_NGRAMS_PER_CHUNK = 100_000
_UNIGRAM = np.dtype([("prob", "<f4"), ("backoff", "<f4"), ("next", "<u4")])


class SphinxLMError(ValueError):
    """The file is not a Sphinx trie LM this reader understands."""


def _bits(max_value: int) -> int:
    """Bits needed for values up to ``max_value`` (pocketsphinx's ``bitarr_required_bits``)."""
    return int(max_value).bit_length()


def _array_bytes(entries: int, total_bits: int) -> int:
    """Bytes of one order's record array: one extra record (the last range's end), rounded up to
    whole bytes, and 8 bytes of padding (``base_size`` in ``lm_trie.c``)."""
    return ((1 + entries) * total_bits + 7) // 8 + 8


def _read_fields(memory: np.ndarray, offsets: np.ndarray, width: int) -> np.ndarray:
    """The ``width``-bit fields that start at the given bit offsets (``bitarr_read_int25``)."""
    start = offsets >> 3
    word = memory[start].astype(np.uint32)
    for k in range(1, 4):
        word |= memory[start + k].astype(np.uint32) << np.uint32(8 * k)
    return (word >> (offsets & 7).astype(np.uint32)) & np.uint32((1 << width) - 1)


@dataclass(frozen=True)
class SphinxNgrams:
    """One order of the model: word indices in reading order (oldest first), log10 probabilities
    and, below the highest order, log10 backoffs."""

    words: np.ndarray  # (n, order) int
    log10_prob: np.ndarray
    log10_backoff: np.ndarray | None


@dataclass(frozen=True)
class SphinxLM:
    """A Sphinx trie LM of order 2 or 3, in arrays (the unigrams are its first order)."""

    vocabulary: list[str]
    orders: list[SphinxNgrams]

    @property
    def order(self) -> int:
        return len(self.orders)

    def arpa(self) -> str:
        """The model as ARPA text (the probabilities as stored, to 4 decimals as Sphinx writes
        them; nothing renormalised)."""
        return "".join(self.arpa_chunks())

    def arpa_chunks(self, ngrams_per_chunk: int = _NGRAMS_PER_CHUNK) -> Iterator[str]:
        """The ARPA text in pieces of at most ``ngrams_per_chunk`` lines.

        Spelling all 3.7 M n-grams of the general LM at once held ~0.6 GB of short-lived Python
        strings for 100 MB of text; a chunk at a time holds a few MB beside the text."""
        counts = (f"ngram {n}={len(g.log10_prob)}\n" for n, g in enumerate(self.orders, 1))
        yield "\\data\\\n" + "".join(counts)
        vocabulary = np.asarray(self.vocabulary, dtype=object)
        for n, grams in enumerate(self.orders, start=1):
            yield f"\n\\{n}-grams:\n"
            for start in range(0, len(grams.log10_prob), ngrams_per_chunk):
                rows = slice(start, start + ngrams_per_chunk)
                spelled = vocabulary[grams.words[rows, 0]]
                for i in range(1, n):
                    spelled = spelled + " " + vocabulary[grams.words[rows, i]]
                lines = np.char.mod("%.4f\t", grams.log10_prob[rows]).astype(object) + spelled
                if grams.log10_backoff is not None:
                    lines = lines + np.char.mod("\t%.4f", grams.log10_backoff[rows]).astype(object)
                yield "\n".join(lines.tolist()) + "\n"
        yield "\n\\end\\\n"


def read_sphinx_lm(path: str | Path) -> SphinxLM:
    """Read a Sphinx trie LM (``*.lm.bin`` of pocketsphinx 5) of order 2 or 3.

    Raises :class:`SphinxLMError` for another format, another order, or a file cut short.
    """
    data = Path(path).read_bytes()
    try:
        return _parse(data, path)
    except SphinxLMError:
        raise
    except (ValueError, IndexError) as error:  # numpy reading past the end of a short file
        raise SphinxLMError(f"{path}: truncated or damaged Sphinx trie LM ({error})") from None


def _parse(data: bytes, path: str | Path) -> SphinxLM:
    if not data.startswith(HEADER):
        raise SphinxLMError(f"{path}: not a Sphinx trie LM (no {HEADER.decode()!r} header)")
    at = len(HEADER)
    order = data[at]
    at += 1
    if order not in (2, 3):
        raise SphinxLMError(f"{path}: order {order}; this reader handles 2- and 3-gram models")
    counts = [int(c) for c in np.frombuffer(data, "<u4", order, at)]
    at += 4 * order + 4  # the counts, then an unused int32 before the quantisation tables
    table = 1 << _QUANT_BITS
    n_values = (order - 2) * 2 * table + table
    values = np.frombuffer(data, "<f4", n_values, at).astype(np.float64) * _LOG10_OF_BASE
    at += 4 * n_values
    middle_prob, middle_backoff = values[:table], values[table : 2 * table]
    longest_prob = values[-table:]
    unigrams = np.frombuffer(data, _UNIGRAM, counts[0] + 1, at)
    at += _UNIGRAM.itemsize * (counts[0] + 1)

    word_bits = _bits(counts[0])
    orders = [
        SphinxNgrams(
            words=np.arange(counts[0])[:, None],
            log10_prob=unigrams["prob"][:-1].astype(np.float64) * _LOG10_OF_BASE,
            log10_backoff=unigrams["backoff"][:-1].astype(np.float64) * _LOG10_OF_BASE,
        )
    ]
    # each record's parent, so that the words of an n-gram can be gathered from its ancestors
    parent_ranges = unigrams["next"].astype(np.int64)
    parents_words = orders[0].words
    for n in range(2, order + 1):
        highest = n == order
        entries = counts[n - 1]
        next_bits = 0 if highest else _bits(counts[n])
        total_bits = word_bits + _QUANT_BITS if highest else word_bits + 2 * _QUANT_BITS + next_bits
        size = _array_bytes(entries, total_bits)
        memory = np.frombuffer(data, np.uint8, size, at)
        at += size
        # the array is sized by the header's count, but Sphinx may fill fewer records (the
        # en-us model: 6 of 2,051,547 bigrams are unused); the parents' ranges say how many
        used = int(parent_ranges[-1])
        if used > entries or np.any(np.diff(parent_ranges) < 0):
            raise SphinxLMError(f"{path}: {n}-gram ranges do not fit {entries} records")
        entries = used
        offsets = np.arange(entries + 1, dtype=np.int64) * total_bits
        words = _read_fields(memory, offsets[:-1], word_bits).astype(np.int64)
        if highest:
            prob = longest_prob[_read_fields(memory, offsets[:-1] + word_bits, _QUANT_BITS)]
            backoff = None
        else:
            backoff = middle_backoff[_read_fields(memory, offsets[:-1] + word_bits, _QUANT_BITS)]
            prob = middle_prob[
                _read_fields(memory, offsets[:-1] + word_bits + _QUANT_BITS, _QUANT_BITS)
            ]
        # a record's parent is the record whose child range holds it
        parent = np.repeat(np.arange(len(parent_ranges) - 1), np.diff(parent_ranges))
        # reversed trie: the new word comes before its parent's words
        ngram_words = np.concatenate([words[:, None], parents_words[parent]], axis=1)
        orders.append(SphinxNgrams(ngram_words, prob, backoff))
        if not highest:
            parent_ranges = _read_fields(
                memory, offsets + word_bits + 2 * _QUANT_BITS, next_bits
            ).astype(np.int64)
            parents_words = ngram_words
    n_bytes = int(np.frombuffer(data, "<u4", 1, at)[0])
    at += 4
    vocabulary = data[at : at + n_bytes].decode("utf-8").split("\0")[: counts[0]]
    if len(vocabulary) != counts[0]:
        raise SphinxLMError(f"{path}: {len(vocabulary)} words for {counts[0]} unigrams")
    return SphinxLM(vocabulary, orders)
