"""The general-English LM: pocketsphinx's binary trie LM read into ARPA, checked against
pocketsphinx's own scoring and against KenLM (the beam search's reader) loading the ARPA."""

from __future__ import annotations

import math
from itertools import islice

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from asr_pipeline.datasets import SphinxLMDataset
from asr_pipeline.datasets.sphinx_lm import pocketsphinx_lm
from asr_pipeline.decoding.ctc import lexicon_of
from asr_pipeline.decoding.language_model import arpa_vocabulary
from asr_pipeline.decoding.lm_entropy_pruning import NgramIndex
from asr_pipeline.decoding.sphinx_lm import SphinxLMError, read_sphinx_lm
from asr_pipeline.pipelines.language_model.nodes import build_word_lm
from asr_pipeline.units.characters import CharacterUnits
from tests.support import project_params

_LOG10_OF_SPHINX_BASE = math.log10(1.0001)


@pytest.fixture(scope="module")
def pocketsphinx_model():
    from pocketsphinx import NGramModel

    return NGramModel.readfile(str(pocketsphinx_lm()))


def test_the_reader_scores_as_pocketsphinx_does(general_lm, pocketsphinx_model) -> None:
    assert general_lm.order == 3
    counts = [len(grams.log10_prob) for grams in general_lm.orders]
    assert counts[0] == len(general_lm.vocabulary) > 50_000
    assert counts[1] > 1_000_000 and counts[2] > 1_000_000
    # ARPA backoff scoring over the reader's arrays (the pruner's index of them)
    index = NgramIndex(general_lm)
    vocabulary = general_lm.vocabulary
    ids = {word: i for i, word in enumerate(vocabulary)}
    rng = np.random.default_rng(0)
    queries = []
    for n in (2, 3):  # n-grams the model stores, and the same contexts with other words
        grams = general_lm.orders[n - 1].words
        for row in grams[rng.choice(len(grams), 150)]:
            queries.append(tuple(vocabulary[i] for i in row))
            queries.append(tuple(vocabulary[i] for i in row[:-1]) + (vocabulary[row[0]],))
    ordinary = [w for w in vocabulary if w not in ("<s>", "</s>")]
    for _ in range(150):  # mostly unseen trigrams: two backoffs deep
        queries.append(tuple(ordinary[i] for i in rng.choice(len(ordinary), 3)))
    compared = 0
    for words in queries:
        if "<s>" in words[1:] or "</s>" in words[:-1]:
            continue
        # pocketsphinx takes the predicted word first, then its history, newest first
        theirs = pocketsphinx_model.prob(list(reversed(words))) * _LOG10_OF_SPHINX_BASE
        ours = index.log10_prob(np.array([[ids[w] for w in words]]))[0]
        assert ours == pytest.approx(theirs, abs=1e-3), words
        compared += 1
    assert compared > 500


def test_kenlm_reads_the_arpa_and_scores_alike(general_lm, pocketsphinx_model, tmp_path) -> None:
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import create_word_dict

    arpa = general_lm.arpa()
    header = arpa[:200].splitlines()
    for n, grams in enumerate(general_lm.orders, start=1):
        assert f"ngram {n}={len(grams.log10_prob)}" in header
    assert len(arpa_vocabulary(arpa)) == len(general_lm.vocabulary) - 2  # <s>, </s>
    path = tmp_path / "general.arpa"
    path.write_text(arpa, encoding="utf-8")
    sentence = ["one", "of", "the", "zebra", "herds", "ran"]
    words = create_word_dict({w: [[w]] for w in ["<unk>", *sentence]})
    kenlm = KenLM(str(path), words)
    state = kenlm.start(False)
    history = ["<s>"]
    for word in sentence:
        state, score = kenlm.score(state, words.get_index(word))
        context = list(reversed(history[-2:]))
        theirs = pocketsphinx_model.prob([word, *context]) * _LOG10_OF_SPHINX_BASE
        assert score == pytest.approx(theirs, abs=1e-3), word
        history.append(word)


def test_characters_spell_only_the_words_they_can(general_lm) -> None:
    words = [w for w in general_lm.vocabulary if w not in ("<s>", "</s>")]
    lexicon = lexicon_of(words, CharacterUnits())
    unspellable = [w for w in words if w not in lexicon]
    assert unspellable and all(not w.replace("'", "").isalpha() for w in unspellable)
    assert {"the", "zebra", "'cause"} <= set(lexicon)
    assert len(lexicon) > 0.9 * len(words)


def test_not_a_sphinx_lm_or_cut_short_is_a_clear_error(tmp_path) -> None:
    arpa = tmp_path / "lm.arpa"
    arpa.write_text("\\data\\\nngram 1=1\n")
    with pytest.raises(SphinxLMError, match="no 'Trie Language Model' header"):
        read_sphinx_lm(arpa)
    short = tmp_path / "short.lm.bin"
    short.write_bytes(pocketsphinx_lm().read_bytes()[:3_000_000])
    with pytest.raises(SphinxLMError, match="truncated"):
        read_sphinx_lm(short)
    # through the catalog's dataset: Kedro's error, with the reason
    with pytest.raises(DatasetError, match="truncated"):
        SphinxLMDataset(filepath=str(short)).load()
    with pytest.raises(DatasetError, match="not found"):
        SphinxLMDataset(filepath=str(tmp_path / "missing.lm.bin")).load()
    with pytest.raises(DatasetError, match="read-only"):
        SphinxLMDataset().save(read_sphinx_lm(pocketsphinx_lm()))


def test_the_word_lm_node_follows_lm_source(general_lm) -> None:
    manifest = pd.DataFrame({"split": ["train", "test"], "text": ["the cat sat", "secret words"]})
    frequencies = pd.DataFrame({"word": ["the", "of"], "frequency": [2.0, 1.0]})
    params = {**project_params("beam_search")["beam_search"], "lm_source": "transcripts"}
    transcripts = build_word_lm(manifest, frequencies, general_lm, params)
    assert set(arpa_vocabulary(transcripts)) == {"the", "cat", "sat", "of"}
    # general_lm_prune 0: the general LM as it is, every n-gram
    general = build_word_lm(
        manifest, frequencies, general_lm, {**params, "lm_source": "general", "general_lm_prune": 0}
    )
    header = dict(line.strip().split("=") for line in islice(general.lines(), 5) if "=" in line)
    assert [int(header[f"ngram {n}"]) for n in (1, 2, 3)] == [
        len(grams.log10_prob) for grams in general_lm.orders
    ]
    with pytest.raises(ValueError, match="lm_source must be one of .*'general'.*got 'books'"):
        build_word_lm(manifest, frequencies, general_lm, {**params, "lm_source": "books"})
