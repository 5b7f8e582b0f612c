"""CTC decoding (greedy and beam search) and the corpus error rates."""

from __future__ import annotations

from pathlib import Path

import jiwer
import pytest
import torch

from asr_pipeline.decoding.ctc import (
    BeamSearchConfig,
    BeamSearchDecoder,
    greedy_decode,
    write_lexicon,
)
from asr_pipeline.decoding.language_model import build_arpa
from asr_pipeline.decoding.metrics import error_rates
from asr_pipeline.units.characters import BLANK, VOCABULARY, encode
from tests.support import project_params

N_CLASSES = len(VOCABULARY)


def beam_config(**overrides) -> BeamSearchConfig:
    """The project's beam search settings (``conf/base``) with ``overrides``."""
    return BeamSearchConfig.from_params(
        {**project_params("beam_search")["beam_search"], **overrides}
    )


def emission(path: str, peak: float = 8.0) -> torch.Tensor:
    """``(T, C)`` log-probabilities whose best path is ``path`` (``_`` is the blank)."""
    logits = torch.zeros(len(path), N_CLASSES)
    for t, symbol in enumerate(path):
        logits[t, VOCABULARY.index(symbol)] = peak
    return logits.log_softmax(-1)


def batch(*paths: str, lengths: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    emissions = [emission(p) for p in paths]
    padded = torch.nn.utils.rnn.pad_sequence(emissions, batch_first=True)
    lengths = lengths if lengths is not None else [len(p) for p in paths]
    return padded, torch.tensor(lengths)


# -- greedy ------------------------------------------------------------------------------------
def test_greedy_merges_repeats_and_blanks_separate_letters() -> None:
    assert greedy_decode(*batch("hhe_ll_lloo")) == ["hello"]
    assert greedy_decode(*batch("l_l", "ll", "l__l", "_")) == ["ll", "l", "ll", ""]
    assert greedy_decode(*batch("dd_oo_nn''tt")) == ["don't"]


def test_greedy_ignores_frames_past_the_length() -> None:
    log_probs, _ = batch("h_i_zzzqq", "ok")
    assert greedy_decode(log_probs, torch.tensor([4, 2])) == ["hi", "ok"]
    # the same utterance, with garbage letters in its padding, decodes the same
    clean, _ = batch("h_i_", "ok")
    assert greedy_decode(clean, torch.tensor([4, 2])) == ["hi", "ok"]


def test_greedy_trims_and_collapses_spaces() -> None:
    assert greedy_decode(*batch("  _hi_ _ there _ _")) == ["hi there"]
    assert greedy_decode(*batch(" _ _ ")) == [""]


# -- error rates -------------------------------------------------------------------------------
def test_error_rates_by_hand() -> None:
    rates = error_rates(["a b c", "d e"], ["a x c", "d"])
    assert rates.wer == pytest.approx(2 / 5)
    assert (rates.substitutions, rates.deletions, rates.insertions) == (1, 1, 0)
    assert rates.reference_words == 5
    # characters: "a b c" -> "a x c" one substitution, "d e" -> "d" two deletions; 5 + 3 chars
    assert rates.cer == pytest.approx(3 / 8)


@pytest.mark.parametrize(
    ("references", "hypotheses"),
    [
        (["the cat sat", "on the mat"], ["the cat sat", "on a mat"]),
        (["hello world", "good morning to you"], ["hello word", "good mourning you too"]),
        (["a b c d e f g h i j", "k"], ["a b c d e f g h i j", "x"]),
    ],
)
def test_error_rates_equal_jiwer_corpus_rates(references, hypotheses) -> None:
    rates = error_rates(references, hypotheses)
    assert rates.wer == pytest.approx(jiwer.wer(references, hypotheses))
    assert rates.cer == pytest.approx(jiwer.cer(references, hypotheses))


def test_error_rates_are_corpus_rates_not_means() -> None:
    references = ["a b c d e f g h i j", "k"]
    hypotheses = ["a b c d e f g h i j", "x"]
    rates = error_rates(references, hypotheses)
    assert rates.wer == pytest.approx(1 / 11)
    mean_of_rates = sum(jiwer.wer(r, h) for r, h in zip(references, hypotheses, strict=True)) / 2
    assert mean_of_rates == pytest.approx(0.5)
    assert rates.cer == pytest.approx(1 / (19 + 1))


# -- beam search -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_beam_of_one_without_lm_is_greedy(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    batch_size, frames = 3, 60
    logits = torch.randn(batch_size, frames, N_CLASSES, generator=generator)
    # peaked: one class per frame stands out, blanks about half of the time
    best = torch.randint(1, N_CLASSES, (batch_size, frames), generator=generator)
    best[torch.rand(batch_size, frames, generator=generator) < 0.5] = 0
    logits.scatter_add_(2, best.unsqueeze(-1), torch.full((batch_size, frames, 1), 6.0))
    log_probs = logits.log_softmax(-1)
    lengths = torch.tensor([frames, 45, 30])

    decoder = BeamSearchDecoder(beam_config(beam_size=1, lm_weight=0.0, lexicon=False))
    greedy = greedy_decode(log_probs, lengths)
    assert any(greedy)
    assert decoder(log_probs, lengths) == greedy


CORPUS = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog",
    "the cat ran after the dog",
    "the man sat on the mat",
    "a dog ran after the man",
] * 3


def noisy_emission(spoken: str, intended: str, seed: int = 0, second: float = 4.5) -> torch.Tensor:
    """Log-probs that spell ``spoken`` best, with ``intended``'s letters second (``second`` vs 6).

    Each character lasts two frames followed by a blank; the other classes are noise.
    """
    assert len(spoken) == len(intended)
    generator = torch.Generator().manual_seed(seed)
    frames = []
    for said, meant in zip(spoken, intended, strict=True):
        for _ in range(2):
            frame = torch.randn(N_CLASSES, generator=generator) * 0.5
            frame[VOCABULARY.index(said)] = 6.0
            if meant != said:
                frame[VOCABULARY.index(meant)] = second
            frames.append(frame)
        blank = torch.randn(N_CLASSES, generator=generator) * 0.5
        blank[VOCABULARY.index(BLANK)] += 6.0
        frames.append(blank)
    return torch.stack(frames).log_softmax(-1)


def test_beam_search_with_lm_and_lexicon_corrects_misspellings(tmp_path: Path) -> None:
    lm_path = tmp_path / "lm.arpa"
    lm_path.write_text(build_arpa(CORPUS, order=3), encoding="utf-8")
    lexicon_path = write_lexicon([w for s in CORPUS for w in s.split()], tmp_path / "lexicon.txt")

    # misspelt into non-words (the lexicon fixes them), and into another word of the lexicon,
    # "man", almost as likely acoustically as "mat" (only the LM's "on the mat" fixes that one)
    intended = ["the cat sat on the mat", "a dog ran after the man", "the dog sat on the mat"]
    spoken = ["the cat sot on the mit", "a dug ran aftor the mun", "the dog sat on the man"]
    seconds = [4.5, 4.5, 5.8]
    emissions = [
        noisy_emission(s, i, seed, second)
        for seed, (s, i, second) in enumerate(zip(spoken, intended, seconds, strict=True))
    ]
    lengths = torch.tensor([len(e) for e in emissions])
    log_probs = torch.nn.utils.rnn.pad_sequence(emissions, batch_first=True)
    for text in intended + spoken:
        encode(text)  # all in the vocabulary

    assert greedy_decode(log_probs, lengths) == spoken
    with_lm = BeamSearchDecoder(
        beam_config(beam_size=50, lm_weight=2.0, word_score=0.0, lexicon=True),
        lm_path=lm_path,
        lexicon_path=lexicon_path,
    )
    assert with_lm(log_probs, lengths) == intended
    lexicon_only = BeamSearchDecoder(
        beam_config(beam_size=50, lm_weight=0.0, lexicon=True), lexicon_path=lexicon_path
    )
    assert lexicon_only(log_probs, lengths) == [*intended[:2], spoken[2]]
    # without a lexicon nor LM weight, the beam keeps the acoustically best spelling
    free = BeamSearchDecoder(
        beam_config(beam_size=50, lm_weight=0.0, lexicon=False), lm_path=lm_path
    )
    assert free(log_probs, lengths) == spoken


def test_threads_decode_at_once_and_alike(tmp_path: Path) -> None:
    """One decoder called from many threads (a server's workers): every thread gets the same
    words as a call alone, and the pool holds one search per thread that decoded at once."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    lexicon_path = write_lexicon([w for s in CORPUS for w in s.split()], tmp_path / "lexicon.txt")
    lm_path = tmp_path / "lm.arpa"
    lm_path.write_text(build_arpa(CORPUS, order=3), encoding="utf-8")
    config = beam_config(beam_size=50, lm_weight=2.0, word_score=0.0, lexicon=True)
    decoder = BeamSearchDecoder(config, lm_path=lm_path, lexicon_path=lexicon_path)
    spoken = ["the cat sot on the mit", "a dug ran aftor the mun", "the dog sat on the man"]
    intended = ["the cat sat on the mat", "a dog ran after the man", "the dog sat on the mat"]
    pairs = enumerate(zip(spoken, intended, strict=True))
    inputs = [noisy_emission(s, i, n, 4.5)[None] for n, (s, i) in pairs]
    alone = [decoder(e, torch.tensor([e.shape[1]]))[0] for e in inputs]
    assert decoder.searches == 1
    threads = 4
    together = Barrier(threads)

    def decode(n: int) -> str:
        together.wait()  # all threads ask at once
        e = inputs[n % len(inputs)]
        return [decoder(e, torch.tensor([e.shape[1]]))[0] for _ in range(5)][-1]

    with ThreadPoolExecutor(threads) as pool:
        answers = list(pool.map(decode, range(threads)))
    assert answers == [alone[n % len(alone)] for n in range(threads)]
    assert 1 <= decoder.searches <= threads
