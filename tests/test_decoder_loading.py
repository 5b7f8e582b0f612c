"""Beam-search decoders that share one loaded LM and lexicon: quiet, and decoding as before."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from asr_pipeline.common.quiet import quiet_c_stderr
from asr_pipeline.decoding.ctc import (
    _WORD_SEPARATOR,
    BeamSearchConfig,
    BeamSearchDecoder,
    _flashlight_token,
    write_lexicon,
)
from asr_pipeline.decoding.flashlight import SearchGraph
from asr_pipeline.decoding.language_model import arpa_vocabulary, build_arpa
from asr_pipeline.units.base import BLANK
from asr_pipeline.units.characters import VOCABULARY, CharacterUnits

CORPUS = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog",
    "the cat ran after the dog",
    "the man sat on the mat",
    "a dog ran after the man",
]
# words the transcripts never say, as the pipeline's background vocabulary adds them
BACKGROUND = {"cot": 3.0, "dig": 2.0, "mad": 2.0, "tan": 1.0, "sad": 1.0, "log": 1.0}
CONFIG = BeamSearchConfig(
    beam_size=16, lm_weight=0.5, word_score=0.0, lm_order=3, background_words=6, lexicon=True
)
GRID = [(lm_weight, word_score) for lm_weight in (0.0, 0.5, 2.0) for word_score in (-2.0, 1.0)]


@pytest.fixture(scope="module")
def arpa() -> str:
    return build_arpa(CORPUS, order=3, background=BACKGROUND)


def noisy(seed: int, batch: int = 4, frames: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Peaked random ``(B, T, C)`` log-probabilities: varied paths, several plausible ones."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, frames, len(VOCABULARY), generator=generator)
    best = torch.randint(0, len(VOCABULARY), (batch, frames), generator=generator)
    logits.scatter_add_(2, best.unsqueeze(-1), torch.full((batch, frames, 1), 3.0))
    return logits.log_softmax(-1), torch.tensor([frames, frames - 7, frames // 2, 3][:batch])


def test_building_the_grid_prints_nothing_to_the_c_stderr(arpa: str, capfd) -> None:
    base = BeamSearchDecoder.from_arpa(CONFIG, arpa)
    decoders = [base.with_settings(replace(CONFIG, lm_weight=w, word_score=s)) for w, s in GRID]
    decoders[0](*noisy(0))
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_a_shared_lm_decoder_decodes_like_a_fresh_one(arpa: str) -> None:
    base = BeamSearchDecoder.from_arpa(CONFIG, arpa)
    for seed, (lm_weight, word_score) in enumerate(GRID):
        settings = replace(CONFIG, lm_weight=lm_weight, word_score=word_score)
        log_probs, lengths = noisy(seed)
        shared = base.with_settings(settings)(log_probs, lengths)
        assert shared == BeamSearchDecoder.from_arpa(settings, arpa)(log_probs, lengths)
    # the base decoder keeps its own settings
    log_probs, lengths = noisy(99)
    assert base(log_probs, lengths) == BeamSearchDecoder.from_arpa(CONFIG, arpa)(log_probs, lengths)


@pytest.mark.parametrize(("with_lm", "with_lexicon"), [(True, True), (False, True), (True, False)])
def test_the_search_finds_what_torchaudios_ctc_decoder_finds(
    arpa: str, tmp_path: Path, with_lm: bool, with_lexicon: bool
) -> None:
    """The graph is assembled as torchaudio's ``ctc_decoder`` assembles it: same best paths."""
    from torchaudio.models.decoder import ctc_decoder

    units = CharacterUnits()
    tokens = [_flashlight_token(units, token) for token in units.tokens]
    lm_path = tmp_path / "lm.arpa"
    lm_path.write_text(arpa, encoding="utf-8")
    lexicon = write_lexicon(arpa_vocabulary(arpa), tmp_path / "lexicon.txt")
    lm, lex = (str(lm_path) if with_lm else None), (str(lexicon) if with_lexicon else None)
    graph = SearchGraph(tokens, BLANK, _WORD_SEPARATOR, lm, lex)
    for seed, (lm_weight, word_score) in enumerate(GRID):
        reference = ctc_decoder(
            lexicon=lex,
            tokens=tokens,
            lm=lm,
            nbest=1,
            beam_size=16,
            lm_weight=lm_weight,
            word_score=word_score,
            blank_token=BLANK,
            sil_token=_WORD_SEPARATOR,
        )
        log_probs, lengths = noisy(seed)
        expected = [
            (best[0].tokens.tolist(), best[0].words if with_lexicon else []) if best else None
            for best in reference(log_probs, lengths.int())
        ]
        assert graph.search(16, lm_weight, word_score)(log_probs, lengths.int()) == expected


def test_quiet_c_stderr_silences_only_its_block(capfd) -> None:
    os.write(2, b"before\n")
    with quiet_c_stderr():
        os.write(2, b"hidden\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before\nafter\n"


def test_an_unreadable_lm_still_fails_loudly(tmp_path: Path) -> None:
    broken = tmp_path / "lm.arpa"
    broken.write_text("not an ARPA file\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"\S"):  # KenLM's own message, as an exception
        BeamSearchDecoder(CONFIG, lm_path=broken)
