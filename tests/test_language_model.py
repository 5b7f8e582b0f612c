"""The ARPA language model: normalised under backoff semantics, well-formed, loadable by KenLM."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from asr_pipeline.decoding.language_model import (
    BOS,
    EOS,
    UNK,
    arpa_vocabulary,
    build_arpa,
    common_words,
)
from tests.support import project_params

CORPUS = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog",
    "the cat ran after the dog",
    "the dog ran",
    "a man saw the cat",
    "the man sat",
    "cat",
] * 3 + ["the end", "on and on", "the cat sat"]

TOKENS = ["_", "|", "'", *"abcdefghijklmnopqrstuvwxyz"]


class Arpa:
    """A minimal ARPA reader: log10 probabilities and backoffs, queried with backoff semantics."""

    def __init__(self, text: str) -> None:
        self.header: dict[int, int] = {}
        self.sections: dict[int, list[str]] = {}
        self.logprob: dict[tuple[str, ...], float] = {}
        self.backoff: dict[tuple[str, ...], float] = {}
        section = None
        for line in text.splitlines():
            if match := re.fullmatch(r"ngram (\d+)=(\d+)", line):
                self.header[int(match[1])] = int(match[2])
            elif match := re.fullmatch(r"\\(\d+)-grams:", line):
                section = int(match[1])
                self.sections[section] = []
            elif line == "\\end\\":
                section = None
            elif section is not None and line:
                self.sections[section].append(line)
                fields = line.split("\t")
                assert len(fields) in (2, 3), line
                gram = tuple(fields[1].split(" "))
                assert len(gram) == section, line
                self.logprob[gram] = float(fields[0])
                if len(fields) == 3:
                    self.backoff[gram] = float(fields[2])

    def log10_prob(self, word: str, context: tuple[str, ...]) -> float:
        """``log10 P(word | context)`` the way an ARPA reader computes it."""
        if (*context, word) in self.logprob:
            return self.logprob[(*context, word)]
        if not context:
            return self.logprob[(UNK,)]
        return self.backoff.get(context, 0.0) + self.log10_prob(word, context[1:])


@pytest.fixture(scope="module")
def arpa3() -> Arpa:
    return Arpa(build_arpa(CORPUS, order=3))


def _predictable(arpa: Arpa) -> list[str]:
    return [gram[0] for gram in arpa.logprob if len(gram) == 1 and gram[0] != BOS]


def _contexts(arpa: Arpa, order: int) -> list[tuple[str, ...]]:
    """Every context the model has up to ``order - 1`` words, plus a few unseen ones."""
    seen = [gram for gram in arpa.logprob if len(gram) < order and gram[-1] != EOS]
    unseen = [("mat", "cat"), ("dog", "the"), ("end",), (BOS, "man"), ("a", "the")]
    return [(), *seen, *unseen]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_sums_to_one(order: int) -> None:
    arpa = Arpa(build_arpa(CORPUS, order=order))
    vocabulary = _predictable(arpa)
    assert {UNK, EOS, "the", "cat"} <= set(vocabulary)
    contexts = [c for c in _contexts(arpa, order) if len(c) < order]
    assert len(contexts) > 10 or order == 1
    for context in contexts:
        total = sum(10 ** arpa.log10_prob(word, context) for word in vocabulary)
        assert total == pytest.approx(1.0, abs=1e-4), context


@pytest.mark.parametrize(
    ("order", "prune"), [(2, [0, 1]), (3, [0, 0, 1]), (3, [0, 1, 1]), (4, [0, 1, 2, 2])]
)
def test_a_pruned_model_is_smaller_and_every_context_still_sums_to_one(
    order: int, prune: list[int]
) -> None:
    full = Arpa(build_arpa(CORPUS, order=order))
    arpa = Arpa(build_arpa(CORPUS, order=order, prune=prune))
    vocabulary = _predictable(arpa)
    assert set(vocabulary) == set(_predictable(full))  # unigrams are never pruned
    for k, threshold in enumerate(prune, start=1):
        assert arpa.header[k] <= full.header[k]
        if threshold and k == order:
            assert arpa.header[k] < full.header[k], (k, arpa.header, full.header)
    for context in _contexts(full, order):  # the full model's contexts: some were pruned away
        total = sum(10 ** arpa.log10_prob(word, context) for word in vocabulary)
        assert total == pytest.approx(1.0, abs=1e-4), context
    # every kept n-gram's context is there to carry its backoff, as an ARPA reader expects
    for gram in arpa.logprob:
        if len(gram) > 1:
            assert gram[:-1] in arpa.logprob and gram[1:] in arpa.logprob, gram
    assert build_arpa(CORPUS, order=order, prune=[0] * order) == build_arpa(CORPUS, order=order)
    for bad in ([1], [0, 2, 1], [-1]):
        with pytest.raises(ValueError, match="prune"):
            build_arpa(CORPUS, order=order, prune=bad)
    # the last threshold holds for the orders after it, as KenLM's --prune
    assert build_arpa(CORPUS, order=order, prune=prune[:2]) == build_arpa(
        CORPUS, order=order, prune=[*prune[:2], *[prune[1]] * (order - 2)]
    )


def test_fixed_discount_sums_to_one_too() -> None:
    arpa = Arpa(build_arpa(CORPUS, order=3, discount=0.9))
    vocabulary = _predictable(arpa)
    for context in _contexts(arpa, 3):
        total = sum(10 ** arpa.log10_prob(word, context) for word in vocabulary)
        assert total == pytest.approx(1.0, abs=1e-4), context


def test_unigram_values_by_hand() -> None:
    # counts a=2, b=1, </s>=1; D=0.5; 3 types over 4 events leave 0.375 for 4 uniform words.
    arpa = Arpa(build_arpa(["a b a"], order=1, discount=0.5))
    assert 10 ** arpa.logprob[("a",)] == pytest.approx(1.5 / 4 + 0.375 / 4, abs=1e-6)
    assert 10 ** arpa.logprob[("b",)] == pytest.approx(0.5 / 4 + 0.375 / 4, abs=1e-6)
    assert 10 ** arpa.logprob[(UNK,)] == pytest.approx(0.375 / 4, abs=1e-6)


def test_lower_order_uses_continuation_counts() -> None:
    # "francisco" is frequent but only ever follows "san"; "the" is rarer but follows two words.
    arpa = Arpa(build_arpa(["san francisco"] * 5 + ["a the", "b the"], order=2))
    assert arpa.logprob[("the",)] > arpa.logprob[("francisco",)]
    assert arpa.logprob[("san", "francisco")] > arpa.logprob[("a", "the")] - 1.0


def test_format(arpa3: Arpa) -> None:
    text = build_arpa(CORPUS, order=3)
    assert text.startswith("\\data\\\n")
    assert text.rstrip().endswith("\\end\\")
    assert arpa3.header == {k: len(lines) for k, lines in arpa3.sections.items()}
    assert set(arpa3.header) == {1, 2, 3}
    unigram = Arpa(build_arpa(CORPUS, order=1))  # an empty bigram section, for KenLM's sake
    assert unigram.header == {1: len(unigram.sections[1]), 2: 0}
    assert arpa3.logprob[(BOS,)] == -99
    # Every context of a longer n-gram carries a backoff; the highest order carries none.
    contexts = {gram[:-1] for gram in arpa3.logprob if len(gram) > 1}
    assert contexts <= set(arpa3.backoff)
    assert not any(len(gram) == 3 for gram in arpa3.backoff)
    # Every n-gram's prefix and suffix exist, as ARPA readers expect.
    for gram in arpa3.logprob:
        if len(gram) > 1:
            assert gram[:-1] in arpa3.logprob and gram[1:] in arpa3.logprob, gram


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        build_arpa(CORPUS, order=7)
    with pytest.raises(ValueError):
        build_arpa(CORPUS, order=0)
    with pytest.raises(ValueError):
        build_arpa([])
    with pytest.raises(ValueError):
        build_arpa(["", "  "])
    with pytest.raises(ValueError):
        build_arpa(CORPUS, discount=1.0)


def _lexicon(tmp_path: Path) -> Path:
    words = sorted({word for sentence in CORPUS for word in sentence.split()})
    path = tmp_path / "lexicon.txt"
    path.write_text("".join(f"{w} {' '.join(w)} |\n" for w in words), encoding="utf-8")
    return path


def _emissions(spelling: list[dict[str, float]], seed: int = 0) -> torch.Tensor:
    """``(1, T, C)`` log-probabilities: each given frame, then a blank frame, plus some noise."""
    generator = torch.Generator().manual_seed(seed)
    frames = []
    for probs in spelling:
        for dist in (probs, {"_": 0.9}):
            frame = torch.full((len(TOKENS),), 1e-3)
            for token, p in dist.items():
                frame[TOKENS.index(token)] = p
            frames.append(frame)
    logits = torch.stack(frames).log() + 0.3 * torch.randn(
        len(frames), len(TOKENS), generator=generator
    )
    return torch.log_softmax(logits, dim=-1).unsqueeze(0).contiguous()


def _lexicon_decoder(arpa: str, lexicon: Path, tmp_path: Path):
    """flashlight's lexicon beam search over ``arpa`` (written to a file) and ``lexicon``."""
    from torchaudio.models.decoder import ctc_decoder

    lm = tmp_path / "lm.arpa"
    lm.write_text(arpa, encoding="utf-8")
    return ctc_decoder(
        lexicon=str(lexicon),
        tokens=TOKENS,
        lm=str(lm),
        blank_token="_",
        sil_token="|",
        lm_weight=1.0,
        beam_size=20,
    )


@pytest.mark.parametrize(("order", "prune"), [(1, []), (3, []), (6, []), (3, [0, 1, 1])])
def test_kenlm_loads_it_lexicon_free(tmp_path: Path, order: int, prune: list[int]) -> None:
    from torchaudio.models.decoder import ctc_decoder

    lm = tmp_path / "lm.arpa"
    lm.write_text(build_arpa(CORPUS, order=order, prune=prune), encoding="utf-8")
    decoder = ctc_decoder(
        lexicon=None, tokens=TOKENS, lm=str(lm), blank_token="_", sil_token="|", lm_weight=0.0
    )
    spelling = [{ch: 0.9} for ch in "|cat|"]
    best = decoder(_emissions(spelling))[0][0]
    assert "".join(decoder.idxs_to_tokens(best.tokens)).strip("|") == "cat"


def test_kenlm_scores_match_and_lexicon_decoder_picks_a_corpus_word(
    tmp_path: Path, arpa3: Arpa
) -> None:
    decoder = _lexicon_decoder(build_arpa(CORPUS, order=3), _lexicon(tmp_path), tmp_path)
    # KenLM reads back our log10 probabilities, including across a backoff.
    words = decoder.word_dict
    state = decoder.lm.start(False)  # context <s>
    state, score = decoder.lm.score(state, words.get_index("the"))
    assert score == pytest.approx(arpa3.log10_prob("the", (BOS,)), abs=1e-4)
    _, score = decoder.lm.score(state, words.get_index("on"))
    assert score == pytest.approx(arpa3.log10_prob("on", (BOS, "the")), abs=1e-4)
    assert arpa3.log10_prob("on", (BOS, "the")) < arpa3.log10_prob("cat", (BOS, "the"))

    # "tha cat": the acoustics prefer "a" over "e"; only "the" is a word, so the search must fix it.
    spelling = [{"t": 0.9}, {"h": 0.9}, {"a": 0.5, "e": 0.4}, {"|": 0.9}]
    spelling += [{"c": 0.9}, {"a": 0.6, "o": 0.3}, {"t": 0.9}, {"|": 0.9}]
    best = decoder(_emissions(spelling, seed=1))[0][0]
    assert best.words == ["the", "cat"]


def test_arpa_vocabulary_is_the_lexicon_of_the_corpus() -> None:
    """The beam search's lexicon comes from the LM itself: every corpus word, no markers."""
    arpa = build_arpa(["the cat sat", "the dog", "a cat"], order=3)
    assert sorted(arpa_vocabulary(arpa)) == ["a", "cat", "dog", "sat", "the"]


# -- background vocabulary ---------------------------------------------------------------------
BACKGROUND = {"the": 50.0, "cat": 5.0, "house": 8.0, "mouse": 2.0, "zebra": 0.5}


@pytest.mark.parametrize("order", [1, 3])
def test_background_words_join_and_every_context_still_sums_to_one(order: int) -> None:
    arpa = Arpa(build_arpa(CORPUS, order=order, background=BACKGROUND))
    vocabulary = _predictable(arpa)
    assert {"house", "mouse", "zebra", "cat", UNK, EOS} <= set(vocabulary)
    for context in [c for c in _contexts(arpa, order) if len(c) < order]:
        total = sum(10 ** arpa.log10_prob(word, context) for word in vocabulary)
        assert total == pytest.approx(1.0, abs=1e-4), context


def test_unseen_background_words_share_the_leftover_mass_by_frequency() -> None:
    plain = Arpa(build_arpa(CORPUS, order=3))
    arpa = Arpa(build_arpa(CORPUS, order=3, background=BACKGROUND))
    unigram = {gram[0]: 10**p for gram, p in arpa.logprob.items() if len(gram) == 1}
    assert unigram["house"] / unigram["mouse"] == pytest.approx(8.0 / 2.0, rel=1e-5)
    assert unigram["mouse"] / unigram["zebra"] == pytest.approx(2.0 / 0.5, rel=1e-5)
    # <unk> and </s> are not in the list: they get its rarest word's frequency
    assert unigram[UNK] == pytest.approx(unigram["zebra"], rel=1e-5)
    # the transcripts keep the upper hand: a seen word outranks every unseen one ...
    assert unigram["sat"] > unigram["house"]
    # ... and the higher orders keep the transcripts' n-grams, no more
    assert {g for g in arpa.logprob if len(g) > 1} == {g for g in plain.logprob if len(g) > 1}
    assert sorted(arpa_vocabulary(build_arpa(CORPUS, background=BACKGROUND))) == sorted(
        {w for s in CORPUS for w in s.split()} | set(BACKGROUND)
    )


def test_bad_background_is_refused() -> None:
    with pytest.raises(ValueError, match="reserved"):
        build_arpa(CORPUS, background={UNK: 1.0, "house": 1.0})
    with pytest.raises(ValueError, match="positive"):
        build_arpa(CORPUS, background={"house": 0.0})


def test_common_words_are_normalised_and_capped() -> None:
    frequencies = [
        ("The", 9.0),
        ("the", 1.0),
        ("co-op", 5.0),  # two words once normalised: skipped
        ("café", 3.0),
        ("cafe", 1.0),
        ("1984", 2.0),  # digits: not spellable
        ("don't", 1.5),
        ("naïve", 1.0),
        ("zebra", 0.5),
    ]
    assert common_words(frequencies, 3) == {"the": 10.0, "cafe": 4.0, "don't": 1.5}
    assert common_words(frequencies, 0) == {}
    with pytest.raises(ValueError):
        common_words(frequencies, -1)


def test_kenlm_decodes_a_background_word_the_transcripts_never_had(tmp_path: Path) -> None:
    from asr_pipeline.decoding.ctc import write_lexicon

    arpa = build_arpa(CORPUS, order=3, background=BACKGROUND)
    lexicon = write_lexicon(arpa_vocabulary(arpa), tmp_path / "lexicon.txt")
    decoder = _lexicon_decoder(arpa, lexicon, tmp_path)
    # "the mouse": "mouse" is in no transcript; with "house" as close, the acoustics decide
    spelling = [{ch: 0.9} for ch in "the"] + [{"|": 0.9}]
    spelling += [{"m": 0.6, "h": 0.3}] + [{ch: 0.9} for ch in "ouse"] + [{"|": 0.9}]
    best = decoder(_emissions(spelling, seed=2))[0][0]
    assert best.words == ["the", "mouse"]


def test_word_frequencies_dataset_and_the_lm_node() -> None:
    import pandas as pd
    from kedro.io import DatasetError

    from asr_pipeline.datasets import WordFrequencyDataset
    from asr_pipeline.pipelines.language_model.nodes import build_transcript_lm

    table = WordFrequencyDataset(language="en").load()
    assert list(table.columns) == ["word", "frequency"]
    assert len(table) > 100_000 and table.frequency.is_monotonic_decreasing
    assert {"the", "of", "and"} <= set(table.word.head(10))
    # wordfreq's memoised copies of the list are dropped: the table is the one the run keeps
    import wordfreq

    assert wordfreq.get_frequency_dict.cache_info().currsize == 0
    assert wordfreq.get_frequency_list.cache_info().currsize == 0
    with pytest.raises(DatasetError, match="read-only"):
        WordFrequencyDataset().save(table)
    with pytest.raises(DatasetError, match="no 'best' word list"):
        WordFrequencyDataset(language="xx").load()

    manifest = pd.DataFrame(
        {"split": ["train", "train", "test"], "text": ["the cat sat", "a dog", "secret words"]}
    )
    params = {**project_params("beam_search")["beam_search"], "background_words": 2000}
    with_background = set(arpa_vocabulary(build_transcript_lm(manifest, table, params)))
    assert {"the", "cat", "sat", "a", "dog", "people", "house"} <= with_background
    assert 2000 <= len(with_background) <= 2005
    params["background_words"] = 0
    alone = set(arpa_vocabulary(build_transcript_lm(manifest, table, params)))
    assert alone == {"the", "cat", "sat", "a", "dog"}


def test_the_lm_is_built_outside_the_training_pipeline() -> None:
    """Under torchrun rank 0 runs the training pipeline while the other ranks wait for it at the
    first collective: nothing slow may come before training there, and the LM is text work."""
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    from tests.support import PROJECT_ROOT

    bootstrap_project(PROJECT_ROOT)
    training = [node.name for node in pipelines["training"].nodes]
    # before training: the units and a few tags, nothing slow
    assert set(training[: training.index("train_acoustic_model")]) <= {
        "build_output_units",
        "describe_training_run",
    }
    assert "build_word_lm" not in training
    assert "word_lm" in pipelines["training"].inputs()
    order = [node.name for node in pipelines["__default__"].nodes]
    assert order.index("build_word_lm") < order.index("tune_beam_search")


def test_torchrun_refuses_to_start_without_the_lm_on_disk() -> None:
    from kedro.io import DataCatalog, MemoryDataset

    from asr_pipeline.distributed import TRAINING_INPUTS, require_inputs

    present = {name: MemoryDataset(1) for name in TRAINING_INPUTS if name != "word_lm"}
    catalog = DataCatalog({**present, "word_lm": MemoryDataset()})
    with pytest.raises(RuntimeError, match="word_lm.*language_model"):
        require_inputs(catalog)
    catalog = DataCatalog({**present, "word_lm": MemoryDataset("\\data\\")})
    require_inputs(catalog)
