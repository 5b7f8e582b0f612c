"""The ARPA language model: normalised under backoff semantics, well-formed, loadable by KenLM."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from asr_pipeline.language_model import BOS, EOS, UNK, arpa_vocabulary, build_arpa

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


@pytest.mark.parametrize("order", [1, 3, 6])
def test_kenlm_loads_it_lexicon_free(tmp_path: Path, order: int) -> None:
    from torchaudio.models.decoder import ctc_decoder

    lm = tmp_path / "lm.arpa"
    lm.write_text(build_arpa(CORPUS, order=order), encoding="utf-8")
    decoder = ctc_decoder(
        lexicon=None, tokens=TOKENS, lm=str(lm), blank_token="_", sil_token="|", lm_weight=0.0
    )
    spelling = [{ch: 0.9} for ch in "|cat|"]
    best = decoder(_emissions(spelling))[0][0]
    assert "".join(decoder.idxs_to_tokens(best.tokens)).strip("|") == "cat"


def test_kenlm_scores_match_and_lexicon_decoder_picks_a_corpus_word(
    tmp_path: Path, arpa3: Arpa
) -> None:
    from torchaudio.models.decoder import ctc_decoder

    lm = tmp_path / "lm.arpa"
    lm.write_text(build_arpa(CORPUS, order=3), encoding="utf-8")
    decoder = ctc_decoder(
        lexicon=str(_lexicon(tmp_path)),
        tokens=TOKENS,
        lm=str(lm),
        blank_token="_",
        sil_token="|",
        lm_weight=1.0,
        beam_size=20,
    )
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
