"""Word timings from the CTC alignment: exact frames on made-up log-probabilities (characters,
phones, subwords), what cannot be timed, and the recognizer's words on a real utterance."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from asr_pipeline.audio.loading import load_audio
from asr_pipeline.decoding.alignment import align_words, frame_seconds, word_tokens
from asr_pipeline.decoding.ctc import BeamSearchConfig
from asr_pipeline.decoding.language_model import build_arpa
from asr_pipeline.model.bundle import with_beam_search
from asr_pipeline.model.recognizer import NO_WORDS, Recognizer
from asr_pipeline.units.base import BLANK
from asr_pipeline.units.characters import CharacterUnits, normalise
from asr_pipeline.units.phones import PhoneUnits
from asr_pipeline.units.subwords import SubwordUnits, train_subwords
from tests.test_units import TEXTS, _bundle, _entries, dictionary  # noqa: F401 - a fixture

SECONDS = 0.03  # per output frame (a 10 ms hop, 3x subsampling: the default preset's)


def _saying(units, said: dict[int, str], frames: int) -> torch.Tensor:
    """``(frames, C)`` log-probabilities that say ``said[frame]`` at those frames, blank
    elsewhere."""
    logits = torch.zeros(frames, len(units.tokens))
    for frame in range(frames):
        logits[frame, units.index[said.get(frame, BLANK)]] = 10.0
    return logits.log_softmax(-1)


def test_character_words_start_and_end_at_their_first_and_last_letter() -> None:
    units = CharacterUnits()
    said = {5: "t", 6: "h", 7: "e", 10: " ", 15: "c", 16: "a", 17: "t", 18: "t"}  # "catt": c a t
    aligned = align_words(_saying(units, said, 30), "the cat", units, SECONDS, offset=60.0)
    assert aligned.note == ""
    assert [w.to_dict() for w in aligned.words] == [
        {"word": "the", "start": 60.15, "end": 60.24},  # frames 5..7, ends after frame 7
        {"word": "cat", "start": 60.45, "end": 60.57},  # frames 15..18: t spans two frames
    ]
    tokens, spans = word_tokens(["the", "cat"], units)
    assert tokens == units.encode("the cat") and spans == [(0, 2), (4, 6)]  # the space: no word


def test_phone_words_align_with_the_first_pronunciation(dictionary) -> None:  # noqa: F811
    units = PhoneUnits.from_pronunciations(_entries(dictionary), stress=False)
    tokens, spans = word_tokens(["the", "cat"], units)
    assert [units.tokens[t] for t in tokens] == ["DH", "AH", "|", "K", "AE", "T"]
    assert spans == [(0, 1), (3, 5)]
    said = {2: "DH", 4: "AH", 6: "|", 8: "K", 9: "AE", 12: "T"}
    aligned = align_words(_saying(units, said, 20), "the cat", units, SECONDS)
    assert [(w.start, w.end) for w in aligned.words] == [(0.06, 0.15), (0.24, 0.39)]


@pytest.mark.parametrize("word_separated", [True, False])
def test_subword_words_are_their_pieces_with_the_boundary_between(word_separated: bool) -> None:
    trained = train_subwords(TEXTS, vocabulary_size=40, model_type="bpe")
    units = SubwordUnits(trained.model, "bpe", word_separated)  # False: units saved before |
    tokens, spans = word_tokens(["the", "mat", "sat"], units)
    assert tokens == units.encode("the mat sat")
    assert (units.index["|"] in tokens) == word_separated  # without: sentencepiece's ▁ marks words
    said = {2 * i + 1: units.tokens[t] for i, t in enumerate(tokens)}
    aligned = align_words(_saying(units, said, 2 * len(tokens) + 2), "the mat sat", units, 0.04)
    first, last = spans[0][0], spans[-1][1]
    assert aligned.words[0].start == pytest.approx(0.04 * (2 * first + 1))
    assert aligned.words[-1].end == pytest.approx(0.04 * (2 * last + 2))


def test_what_cannot_be_timed_gives_words_without_times_and_says_why(dictionary) -> None:  # noqa: F811
    units = CharacterUnits()
    log_probs = _saying(units, {}, 8)
    assert align_words(log_probs, "", units, SECONDS).words == []
    assert align_words(log_probs, "   ", units, SECONDS).words == []
    too_long = align_words(log_probs, "the cat sat", units, SECONDS)  # 11 tokens, 8 frames
    assert [w.word for w in too_long.words] == ["the", "cat", "sat"]
    assert all(w.start is None and w.end is None for w in too_long.words)
    assert "alignment impossible: 11 tokens need 11 frames, the audio gives 8" in too_long.note
    repeats = align_words(_saying(units, {}, 3), "oo", units, SECONDS)  # o, blank, o: 3 frames
    assert repeats.note == "" and repeats.words[0].end == pytest.approx(0.09)
    phones = PhoneUnits.from_pronunciations(_entries(dictionary), stress=False)
    unknown = align_words(_saying(phones, {}, 30), "the dog", phones, SECONDS)
    assert [w.start for w in unknown.words] == [None, None]
    assert "no pronunciation for 'dog'" in unknown.note
    # the end never passes the audio: the last output frame reaches past it
    clipped = align_words(_saying(units, {1: "a"}, 4), "a", units, SECONDS, 1.0, duration=0.05)
    assert (clipped.words[0].start, clipped.words[0].end) == (1.03, 1.05)


def test_the_output_frame_lasts_a_hop_times_the_models_subsampling() -> None:
    recognizer = Recognizer(_bundle(CharacterUnits()))
    stride = recognizer.model.config.time_stride
    assert recognizer.frame_seconds == pytest.approx(0.01 * stride)
    assert frame_seconds(160, 16_000, 1000, 250) == pytest.approx(0.04)  # 4x (the Conformer)


@pytest.fixture(scope="module")
def utterance(librispeech_root: Path) -> tuple[torch.Tensor, str]:
    audio = next((librispeech_root / "dev-clean-2").rglob("*.flac"))
    lines = next(audio.parent.glob("*.trans.txt")).read_text().splitlines()
    text = normalise(dict(line.split(" ", 1) for line in lines)[audio.stem])[0]
    return load_audio(audio, 16_000), text


def _with_lm(bundle: dict, sentences: list[str]) -> dict:
    config = BeamSearchConfig(
        beam_size=8, lm_weight=0.5, word_score=0.0, lm_order=2, background_words=0, lexicon=True
    )
    return with_beam_search(bundle, config, build_arpa(sentences, order=2), {})


def _check_timings(words, duration: float) -> None:
    """In order, not overlapping, inside the audio, each lasting at least one frame."""
    assert words, "no words"
    for word in words:
        assert 0.0 <= word.start < word.end <= duration + 1e-6, word
    for before, after in zip(words, words[1:], strict=False):
        assert before.end <= after.start, (before, after)


def test_a_real_utterance_gets_its_words_in_order_within_the_audio(utterance) -> None:
    signal, text = utterance
    duration = len(signal) / 16_000
    characters = Recognizer(_with_lm(_bundle(CharacterUnits()), [text]))
    for decoder in ("greedy", "beam"):
        result = characters.transcribe_one(signal, decoder)
        assert [w.word for w in result.words] == result.text.split() and result.note == ""
        _check_timings(result.words, duration)
        assert result.cuts == []  # a short utterance is one segment
        assert result.text == characters.transcribe([signal], decoder)[0]


def test_a_phone_model_gets_its_words_from_its_beam_search(utterance, dictionary) -> None:  # noqa: F811
    signal, text = utterance
    entries = pd.concat([dictionary, pd.DataFrame({"word": text.split(), "pronunciation": "AH"})])
    units = PhoneUnits.from_pronunciations(_entries(entries), stress=False)
    plain = Recognizer(_bundle(units))
    greedy = plain.transcribe_one(signal, "greedy")
    assert greedy.words == [] and greedy.note == NO_WORDS  # phones, and no beam search to ask
    carrying = Recognizer(_with_lm(_bundle(units), [text]))
    result = carrying.transcribe_one(signal, "greedy")
    assert result.text == greedy.text  # the phones, as before
    beam_words = carrying.transcribe_one(signal, "beam").text.split()
    assert [w.word for w in result.words] == beam_words and result.note == ""
    _check_timings(result.words, len(signal) / 16_000)
