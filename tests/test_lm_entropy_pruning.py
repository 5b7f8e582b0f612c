"""Relative-entropy pruning of the general-English LM: smaller, still normalised, and what it
keeps it keeps unchanged; KenLM reads the pruned ARPA and scores as the arrays say."""

from __future__ import annotations

import numpy as np
import pytest

from asr_pipeline.decoding.lm_entropy_pruning import NgramIndex, prune


@pytest.fixture(scope="module")
def pruned(general_lm):
    return {threshold: prune(general_lm, threshold) for threshold in (3e-7, 1e-6)}


def _rows(lm, n: int) -> set[tuple[int, ...]]:
    return set(map(tuple, lm.orders[n - 1].words.tolist()))


def test_pruning_shrinks_the_model_and_keeps_what_longer_ngrams_need(general_lm, pruned) -> None:
    light, heavy = pruned[3e-7], pruned[1e-6]
    sizes = [[len(g.log10_prob) for g in lm.orders] for lm in (general_lm, light, heavy)]
    assert sizes[0][0] == sizes[1][0] == sizes[2][0]  # every word stays
    for n in (1, 2):
        assert sizes[0][n] > sizes[1][n] > sizes[2][n] > 0
    # a higher threshold keeps a subset of what a lower one keeps
    assert _rows(heavy, 3) <= _rows(light, 3) <= _rows(general_lm, 3)
    # every kept trigram's suffix (its backoff) is a kept bigram
    bigrams = _rows(heavy, 2)
    assert all(gram[1:] in bigrams for gram in _rows(heavy, 3))
    # and a kept n-gram's probability is the unpruned model's
    original = NgramIndex(general_lm)
    for grams in heavy.orders[1:]:
        assert np.allclose(original.log10_prob(grams.words), grams.log10_prob)


def test_every_context_still_sums_to_one(pruned) -> None:
    lm = pruned[1e-6]
    index = NgramIndex(lm)
    size = len(lm.vocabulary)
    bos = lm.vocabulary.index("<s>")
    rng = np.random.default_rng(1)
    for n in (1, 2):
        grams = lm.orders[n - 1]
        with_children = np.flatnonzero(grams.log10_backoff != 0)
        for row in grams.words[rng.choice(with_children, 4)]:
            rows = np.column_stack([np.repeat(row[None, :], size, axis=0), np.arange(size)])
            rows = rows[rows[:, -1] != bos]  # <s> is never predicted
            total = np.power(10.0, index.log10_prob(rows)).sum()
            assert total == pytest.approx(1.0, abs=1e-3), [lm.vocabulary[i] for i in row]


def test_kenlm_scores_the_pruned_arpa_as_the_arrays_do(pruned, tmp_path) -> None:
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import create_word_dict

    lm = pruned[1e-6]
    path = tmp_path / "pruned.arpa"
    path.write_text(lm.arpa(), encoding="utf-8")
    sentence = ["one", "of", "the", "zebra", "herds", "ran", "away"]
    words = create_word_dict({w: [[w]] for w in ["<unk>", *sentence]})
    kenlm = KenLM(str(path), words)
    index = NgramIndex(lm)
    ids = [lm.vocabulary.index(w) for w in ["<s>", *sentence]]
    state = kenlm.start(False)
    for end in range(1, len(ids)):
        state, score = kenlm.score(state, words.get_index(sentence[end - 1]))
        context = np.array([ids[max(0, end - 2) : end + 1]])
        assert score == pytest.approx(float(index.log10_prob(context)[0]), abs=1e-3)


def test_a_negative_threshold_is_refused(general_lm) -> None:
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        prune(general_lm, -1e-7)
