"""Output units: characters (unchanged), phones of a pronunciation dictionary, sentencepiece
subwords; their parameters, their place in the model bundle, and decoding them into words."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from asr_pipeline.audio.features import FeatureConfig, NormalisationStats
from asr_pipeline.datasets.pronunciations import PronunciationDictionaryDataset
from asr_pipeline.decoding.ctc import BeamSearchConfig, BeamSearchDecoder, greedy_decode
from asr_pipeline.decoding.language_model import build_arpa
from asr_pipeline.decoding.metrics import unit_error_rates, utterance_unit_error_rate
from asr_pipeline.model.acoustic import AcousticModel, ModelConfig
from asr_pipeline.model.bundle import bundle_units, make_bundle, with_beam_search
from asr_pipeline.model.recognizer import Recognizer
from asr_pipeline.pipelines.evaluation.nodes import _reference_units, _scoring_units
from asr_pipeline.units.base import BLANK, WORD_BOUNDARY, UnitsError
from asr_pipeline.units.characters import VOCABULARY, CharacterUnits, encode
from asr_pipeline.units.factory import UnitsConfig, build_units, coverage, units_from_dict
from asr_pipeline.units.phones import PhoneUnits
from asr_pipeline.units.subwords import SubwordUnits, train_subwords
from tests.support import project_params

UNITS = project_params("units")["units"]
DICTIONARY = """\
;;; a comment line
the DH AH0
the(2) DH IY0
cat K AE1 T
cat's K AE1 T S
sat S AE1 T
on AA1 N
mat M AE1 T
a AH0
a(2) EY1
read R EH1 D
read(2) R IY1 D
able-bodied EY1 B AH0 L B AA1 D IY0 D
a.m. EY2 EH1 M # not a transcript's word
"""
TEXTS = ["the cat sat on the mat", "a cat's mat", "the mat sat on a cat"] * 4


@pytest.fixture
def dictionary(tmp_path: Path) -> pd.DataFrame:
    path = tmp_path / "tiny.dict"
    path.write_text(DICTIONARY)
    return PronunciationDictionaryDataset(str(path)).load()


def _entries(table: pd.DataFrame):
    return table[["word", "pronunciation"]].itertuples(index=False, name=None)


def _round_trip(values: dict) -> dict:
    """Through torch.save / torch.load(weights_only=True), as in a bundle."""
    path = Path("/tmp") / f"units-{id(values)}.pt"
    torch.save(values, path)
    try:
        return torch.load(path, weights_only=True)
    finally:
        path.unlink()


# -- parameters --------------------------------------------------------------------------------
def test_units_parameters_come_from_the_yaml_and_refuse_unknown_keys() -> None:
    assert UNITS["kind"] == "phones"  # the default (docs/accuracy.md)
    config = UnitsConfig.from_params(UNITS)
    assert (config.kind, config.stress) == ("phones", UNITS["phones"]["stress"])
    assert config.vocabulary_size == UNITS["subwords"]["vocabulary_size"]
    cases = [
        ({**UNITS, "kinds": "phones"}, "unknown units setting(s) ['kinds']"),
        ({**UNITS, "phones": {"stres": True}}, "unknown units.phones setting(s) ['stres']"),
        ({**UNITS, "phones": {**UNITS["phones"], "missing_words": "skip"}}, "'skip'"),
        ({**UNITS, "subwords": {"vocabulary_size": 64}}, "missing units.subwords setting(s)"),
        ({**UNITS, "kind": "graphemes"}, "unknown units.kind 'graphemes'"),
        ({**UNITS, "subwords": {**UNITS["subwords"], "model_type": "wordpiece"}}, "wordpiece"),
    ]
    for params, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            UnitsConfig.from_params(params)


# -- characters: exactly as before -------------------------------------------------------------
def test_character_units_are_the_characters_of_old() -> None:
    units = CharacterUnits()
    assert units.tokens == VOCABULARY and units.tokens[0] == BLANK and units.boundary == " "
    assert units.encode("don't stop") == encode("don't stop")
    assert units.greedy_text([0, *encode(" hi  there "), 0]) == "hi there"
    assert units.spellings(["hi", "x-y"]) == {"hi": [["h", "i", " "]]}
    assert units_from_dict(_round_trip(units.to_dict())).tokens == VOCABULARY
    with pytest.raises(UnitsError, match="not in the vocabulary"):
        units.encode("42")


# -- phones ------------------------------------------------------------------------------------
def test_the_dictionary_reads_variants_comments_and_stress(dictionary: pd.DataFrame) -> None:
    assert dictionary.word.tolist().count("the") == 2  # the(2) is a variant of the
    units = PhoneUnits.from_pronunciations(_entries(dictionary), stress=False)
    assert units.tokens[:2] == (BLANK, WORD_BOUNDARY)
    assert "AE" in units.tokens and not any(t[-1].isdigit() for t in units.tokens)
    assert set(units.lexicon) == {"the", "cat", "cat's", "sat", "on", "mat", "a", "read"}
    assert units.lexicon["the"] == [("DH", "AH"), ("DH", "IY")]
    stressed = PhoneUnits.from_pronunciations(_entries(dictionary), stress=True)
    assert {"AE1", "AH0", "EY1"} <= set(stressed.tokens) and "AE" not in stressed.tokens


def test_phones_encode_words_with_boundaries_and_refuse_unknown_words(dictionary) -> None:
    units = PhoneUnits.from_pronunciations(_entries(dictionary), stress=False)
    ids = units.encode("the cat")
    assert [units.tokens[i] for i in ids] == ["DH", "AH", "|", "K", "AE", "T"]
    assert units.greedy_text([0, *ids, 0]) == units.reference_units("the cat") == "DH AH | K AE T"
    with pytest.raises(UnitsError, match="no pronunciation for 'dog'"):
        units.encode("the dog")
    assert not units.can_encode("the dog") and units.missing_words("the dog sat") == ["dog"]
    # several pronunciations, each a spelling ended by the boundary, for the lexicon search
    assert units.spellings(["read", "dog"]) == {
        "read": [["R", "EH", "D", "|"], ["R", "IY", "D", "|"]]
    }
    small = units.restricted_to(["cat", "dog"])
    assert small.tokens == units.tokens and set(small.lexicon) == {"cat"}
    # words added for scoring; a phone the model does not know cannot be one of its references
    wider = small.with_pronunciations([("mad", "M AE1 D"), ("cow", "K AW1")])
    assert wider.reference_units("cat mad") == "K AE T | M AE D" and "cow" not in wider.lexicon
    again = units_from_dict(_round_trip(units.to_dict()))
    assert again.tokens == units.tokens and again.lexicon == units.lexicon
    # a loaded lexicon holds one string per phone, whichever words share it (memory in training)
    assert again.lexicon["cat"][0][1] is again.lexicon["sat"][0][1] == "AE"


def test_the_pocketsphinx_dictionary_gives_39_phones() -> None:
    table = PronunciationDictionaryDataset().load()
    assert len(table) == 134_860 and table.word.str.contains(r"\(").sum() == 0
    units = PhoneUnits.from_pronunciations(_entries(table), stress=False)
    assert len(units.tokens) == 2 + 39
    assert units.reference_units("mister quilter") == "M IH S T ER | K W IH L T ER"


def test_scoring_keeps_only_the_references_words_and_phones_them_as_the_whole_lexicons_do():
    table = PronunciationDictionaryDataset().load()
    model_words = ["mister", "gospel", "apostle", "the"]
    units = PhoneUnits.from_pronunciations(_entries(table), stress=False)
    own = units.restricted_to(model_words).with_guesses({"quilter": ("K", "W", "IH", "L", "T")})
    references = pd.Series(
        ["mister quilter is the apostle of the middle classes", "his gospel", "zzyzxq quilter"]
    )
    whole = own.with_pronunciations(_entries(table))
    scoring = _scoring_units(own, table, references)
    assert set(scoring.lexicon) < set(whole.lexicon)
    assert set(scoring.lexicon) == {w for t in references for w in t.split()} - {"zzyzxq"}
    # the model's own pronunciation (a guess here) wins over the dictionary's, as before
    for text in references:
        assert _reference_units(scoring, text) == _reference_units(whole, text)
    assert _reference_units(scoring, "mister quilter").endswith("K W IH L T")
    assert _reference_units(scoring, "zzyzxq quilter") == ""  # not scored
    characters = CharacterUnits()
    assert _scoring_units(characters, table, references) is characters


def test_coverage_counts_what_phones_cannot_encode(dictionary) -> None:
    units = PhoneUnits.from_pronunciations(_entries(dictionary), stress=False)
    texts = {"train": ["the cat sat", "the dog sat", "dog and cat"], "validation": ["a mat"]}
    report = coverage(units, texts)
    assert report["splits"]["train"] == {
        "utterances": 3,
        "utterances_excluded": 2,
        "words": 9,
        "words_without_pronunciation": 3,
        "distinct_words_without_pronunciation": 2,
        "words_pronounced_by_g2p": 0,
    }
    assert report["splits"]["validation"]["utterances_excluded"] == 0
    assert report["most_frequent_words_without_pronunciation"] == {
        "dog": {"count": 2, "g2p": None},
        "and": {"count": 1, "g2p": None},
    }


def test_words_the_dictionary_lacks_are_guessed_or_their_utterances_excluded() -> None:
    table = PronunciationDictionaryDataset().load()
    held_out = set(table.word.drop_duplicates().iloc[::400])  # 1 word in 400: ~300 words
    known = table[~table.word.isin(held_out)]
    texts = ["holofernes spoke to judith", "the cat sat"]
    for missing_words in ("g2p", "exclude"):
        params = {
            **UNITS,
            "kind": "phones",
            "phones": {**UNITS["phones"], "missing_words": missing_words},
        }
        units = build_units(
            UnitsConfig.from_params(params), [], _entries(known), cover=[*texts, *held_out]
        )
        report = coverage(units, {"train": texts})["splits"]["train"]
        assert report["words_without_pronunciation"] == 1  # holofernes
        if missing_words == "exclude":
            assert not units.guessed and report["utterances_excluded"] == 1
            continue
        assert report["words_pronounced_by_g2p"] == 1 and report["utterances_excluded"] == 0
        assert held_out <= units.guessed | {w for w in held_out if not units.can_encode(w)}
        # the guesses, against the dictionary's own pronunciations of the held-out words
        first = table.drop_duplicates("word").set_index("word").pronunciation
        references = [" ".join(first[w].split()) for w in sorted(held_out & units.guessed)]
        guesses = [units.reference_units(w) for w in sorted(held_out & units.guessed)]
        assert unit_error_rates(references, guesses).per < 0.2
        again = units_from_dict(_round_trip(units.to_dict()))
        assert again.guessed == units.guessed


# -- subwords ----------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_subwords_encode_any_normalised_text(model_type: str) -> None:
    units = train_subwords(TEXTS, vocabulary_size=40, model_type=model_type)
    assert units.tokens[:2] == (BLANK, WORD_BOUNDARY) and len(units.tokens) <= 41
    for text in ["the cat sat", "quixotic zebra's jazz"]:  # letters the transcripts never had
        ids = units.encode(text)
        assert 0 not in ids and ids.count(1) == text.count(" ")  # | between the words only
        assert units.greedy_text(ids) == text
    spelled = units.spellings(["cat", "zebra"])
    assert [units.index[t] for t in spelled["zebra"][0]] == [*units.encode("zebra"), 1]
    again = units_from_dict(_round_trip(units.to_dict()))
    assert isinstance(again, SubwordUnits) and again.digest() == units.digest()
    # the same transcripts give the same model (every rank of a distributed run makes its own)
    assert train_subwords(TEXTS, 40, model_type).digest() == units.digest()


# -- bundles -----------------------------------------------------------------------------------
def _bundle(units) -> dict:
    torch.manual_seed(0)
    config = ModelConfig.from_dict(
        {
            **project_params("training")["training"]["presets"]["default"],
            **{"rnn_dim": 16, "n_rnn_layers": 1, "cnn_channels": 4, "n_features": 80},
            "n_classes": len(units.tokens),
        }
    )
    features = FeatureConfig.from_params(project_params("feature_engineering")["features"])
    stats = NormalisationStats(mean=[0.0] * 80, std=[1.0] * 80, frames=1)
    return make_bundle(config, AcousticModel(config).state_dict(), features, stats, {}, units)


def test_bundles_carry_their_units_and_older_formats_load_as_characters(dictionary) -> None:
    units = PhoneUnits.from_pronunciations(_entries(dictionary), stress=False)
    bundle = _round_trip(_bundle(units))
    assert bundle["format"] == 3 and bundle["units"]["kind"] == "phones"
    assert Recognizer(bundle).units.lexicon == units.lexicon
    characters = _bundle(CharacterUnits())
    older = {k: v for k, v in characters.items() if k != "units"}
    for version in (1, 2):
        assert bundle_units({**older, "format": version}).tokens == VOCABULARY
    with pytest.raises(ValueError, match="another vocabulary"):
        bundle_units({**older, "format": 2, "vocabulary": ["_", "a"]})
    with pytest.raises(ValueError, match="unsupported model bundle format 4"):
        bundle_units({**characters, "format": 4})
    with pytest.raises(ValueError, match="29 classes but the phones units have 16 tokens"):
        make_bundle(
            ModelConfig.from_dict({**characters["model_config"]}),
            {},
            FeatureConfig(**characters["feature_config"]),
            NormalisationStats(**characters["normalisation"]),
            {},
            units,
        )
    # the registered bundle keeps the pronunciations of its LM's words only
    config = BeamSearchConfig(
        beam_size=8, lm_weight=0.5, word_score=0.0, lm_order=2, background_words=0, lexicon=True
    )
    registered = with_beam_search(bundle, config, build_arpa(["the cat sat"], order=2), {})
    assert set(registered["units"]["lexicon"]) == {"the", "cat", "sat"}
    assert registered["units"]["tokens"] == bundle["units"]["tokens"]


# -- decoding ----------------------------------------------------------------------------------
def _log_probs(units, tokens: list[str], peak: float = 8.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames that say ``tokens`` (each followed by a blank frame) with confidence ``peak``; the
    word boundary is never said where it is not (as a trained model says it: not at the end)."""
    path = [t for token in tokens for t in (token, BLANK)]
    logits = torch.zeros(len(path), len(units.tokens))
    logits[:, units.index[units.boundary]] = -100.0
    for frame, token in enumerate(path):
        logits[frame, units.index[token]] = peak
    return logits.log_softmax(-1).unsqueeze(0), torch.tensor([len(path)])


def test_a_phone_model_decodes_to_phones_greedily_and_to_words_with_its_lexicon(dictionary):
    units = PhoneUnits.from_pronunciations(_entries(dictionary), stress=False)
    said = ["DH", "IY", "|", "K", "AE", "T", "|", "S", "AE", "T"]  # the second pronunciation
    log_probs, lengths = _log_probs(units, said)
    assert greedy_decode(log_probs, lengths, units) == ["DH IY | K AE T | S AE T"]
    config = BeamSearchConfig(
        beam_size=16, lm_weight=0.5, word_score=0.0, lm_order=2, background_words=0, lexicon=True
    )
    decoder = BeamSearchDecoder.from_arpa(config, build_arpa(TEXTS, order=2), units)
    # the last word is said although no frame closes it with |: the decoder adds that frame
    assert decoder(log_probs, lengths) == ["the cat sat"]
    padded = torch.cat([log_probs, log_probs[:, :3]], dim=1)  # padding is never read
    assert decoder(padded.expand(2, -1, -1), torch.tensor([lengths[0], 6])) == [
        "the cat sat",
        "the",
    ]
    with pytest.raises(ValueError, match="need the lexicon beam search"):
        BeamSearchDecoder(config, units=units)


def test_a_subword_model_decodes_to_words_both_ways() -> None:
    units = build_units(UnitsConfig.from_params({**UNITS, "kind": "subwords"}), TEXTS)
    pieces = [units.tokens[i] for i in units.encode("the mat sat")]
    log_probs, lengths = _log_probs(units, pieces)
    assert greedy_decode(log_probs, lengths, units) == ["the mat sat"]
    config = BeamSearchConfig(
        beam_size=16, lm_weight=0.5, word_score=0.0, lm_order=2, background_words=0, lexicon=True
    )
    decoder = BeamSearchDecoder.from_arpa(config, build_arpa(TEXTS, order=2), units)
    assert decoder(log_probs, lengths) == ["the mat sat"]


def test_a_subword_model_holding_its_pieces_over_frames_decodes_to_its_words() -> None:
    """A trained model says a piece over several frames; the lexicon search must not read a
    word's held last piece as silence or as the word again (``|`` closes each spelling)."""
    units = build_units(UnitsConfig.from_params({**UNITS, "kind": "subwords"}), TEXTS)
    held = [i for i in units.encode("the mat sat") for i in [i, i, i, 0]]  # 3 frames, a blank
    logits = torch.zeros(len(held), len(units.tokens))
    logits[torch.arange(len(held)), held] = 8.0
    log_probs, lengths = logits.log_softmax(-1).unsqueeze(0), torch.tensor([len(held)])
    config = BeamSearchConfig(
        beam_size=16, lm_weight=0.5, word_score=0.0, lm_order=2, background_words=0, lexicon=True
    )
    decoder = BeamSearchDecoder.from_arpa(config, build_arpa(TEXTS, order=2), units)
    assert greedy_decode(log_probs, lengths, units) == ["the mat sat"]
    assert decoder(log_probs, lengths) == ["the mat sat"]


def test_subword_units_saved_before_word_separators_keep_their_targets() -> None:
    units = build_units(UnitsConfig.from_params({**UNITS, "kind": "subwords"}), TEXTS)
    saved = {k: v for k, v in units.to_dict().items() if k != "word_separated"}
    older = units_from_dict(_round_trip(saved))
    assert not older.word_separated and not older.spellings_end_with_boundary
    assert 1 not in older.encode("the mat sat")
    assert older.greedy_text(older.encode("the mat sat")) == "the mat sat"
    assert older.spellings(["mat"])["mat"][0][-1] != "|"
    assert older.to_dict() == saved  # the same digest: their checkpoints still resume
    assert older.digest() != units.digest()  # a checkpoint of the one never resumes the other


def test_phone_error_rates_leave_word_boundaries_out() -> None:
    rates = unit_error_rates(["DH AH | K AE T", ""], ["DH AH K AE | T", "AA"])
    assert rates.per == 0.0 and rates.reference_units == 5  # the empty reference is not scored
    assert unit_error_rates(["K AE T"], ["K T"]).deletions == 1
    assert utterance_unit_error_rate("K AE T", "K AE T S") == pytest.approx(1 / 3)
    assert utterance_unit_error_rate("", "K") != utterance_unit_error_rate("", "K")  # NaN
