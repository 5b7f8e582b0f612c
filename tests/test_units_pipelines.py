"""Phone and subword units through the pipelines in memory, as tests/test_pipelines.py runs the
characters: train a one-epoch model of each kind, evaluate it, transcribe with it and serve it
(the pyfunc in process). A real ``kedro run`` of a phone model through the registry is in
tests/test_units_end_to_end.py.

The phone runs read the real pronunciation dictionary less the pronunciation of one training
word: one guesses it (``missing_words: g2p``, the default), the other leaves its utterance out of
training (``exclude``); both count it.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline

from asr_pipeline.datasets.pronunciations import PronunciationDictionaryDataset
from asr_pipeline.decoding.language_model import arpa_vocabulary
from asr_pipeline.model.recognizer import Recognizer
from asr_pipeline.pipelines import (
    data_engineering,
    evaluation,
    feature_engineering,
    inference,
    language_model,
    training,
)
from asr_pipeline.pipelines.training import decoder_nodes, units_nodes
from asr_pipeline.serving.pyfunc import SpeechRecognizerModel
from asr_pipeline.units.factory import units_from_dict
from tests.in_memory import merged, persisted_datasets, run_in_memory
from tests.support import base_parameters
from tests.test_pipelines import TINY, WORD_FREQUENCIES


@pytest.fixture(scope="module")
def parameters(librispeech_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    local = {
        "librispeech": {"root": str(librispeech_root), "download": False},
        "training": {"checkpoint_dir": str(tmp_path_factory.mktemp("checkpoints"))},
        "units": {"subwords": {"vocabulary_size": 64}},
    }
    return merged(merged(base_parameters(), TINY), local)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def splits(parameters: dict) -> pd.DataFrame:
    return run_in_memory(data_engineering.create_pipeline(), parameters).load("manifest_splits")


@pytest.fixture(scope="module")
def feature_run(parameters: dict, splits: pd.DataFrame, store_root: Path) -> DataCatalog:
    pipeline = feature_engineering.create_pipeline()
    datasets = persisted_datasets(pipeline, store_root)
    return run_in_memory(pipeline, parameters, {"manifest_splits": splits}, datasets)


def _rarest_training_word(splits: pd.DataFrame) -> str:
    """A word of one training utterance only (the longest such), to take out of the lexicon."""
    train = splits[splits.split == "train"].text
    counts = pd.Series([w for text in train for w in set(text.split())]).value_counts()
    return max(counts[counts == 1].index, key=len)


@pytest.fixture(scope="module", params=["phones", "phones-exclude", "subwords"])
def units_run(request, parameters, splits, feature_run, store_root, general_lm) -> SimpleNamespace:
    """Training, evaluation (without promotion) and inference with units of one kind."""
    kind, _, exclude = request.param.partition("-")
    missing_words = "exclude" if exclude else "g2p"
    units = {"kind": kind, "phones": {"missing_words": missing_words}}
    # the transcripts' LM: small, and its words are the ones the units must spell
    params = merged(parameters, {"units": units, "beam_search": {"lm_source": "transcripts"}})
    dictionary = PronunciationDictionaryDataset().load()
    missing = _rarest_training_word(splits)
    dictionary = dictionary[dictionary.word != missing]
    pipeline = language_model.create_pipeline() + training.create_pipeline()
    inputs = {
        "manifest_splits": splits,
        "feature_index": feature_run.load("feature_index"),
        "normalisation_stats": feature_run.load("normalisation_stats"),
        "word_frequencies": WORD_FREQUENCIES,
        "general_lm": general_lm,
        "pronunciations": dictionary,
    }
    trained = run_in_memory(pipeline, params, inputs, persisted_datasets(pipeline, store_root))
    bundle = trained.load("acoustic_model")
    pipeline = evaluation.create_pipeline()
    pipeline = pipeline - Pipeline([n for n in pipeline.nodes if n.name == "promote_model"])
    inputs = {"acoustic_model": bundle, "manifest_splits": splits, "pronunciations": dictionary}
    evaluated = run_in_memory(pipeline, params, inputs)
    test_ids = splits[splits.split == "test"].utterance_id.tolist()
    asked = merged(params, {"inference": {"inputs": test_ids[:1]}})
    inferred = run_in_memory(inference.create_pipeline(), asked, {"inference_model": bundle})
    return SimpleNamespace(
        kind=kind,
        excluded=bool(exclude),
        trained=trained,
        evaluated=evaluated,
        inferred=inferred,
        missing=missing,
    )


def test_the_model_outputs_its_units_and_carries_them(units_run, splits) -> None:
    bundle = units_run.trained.load("acoustic_model")
    units = units_run.trained.load("output_units")
    assert bundle["format"] == 3 and bundle["units"]["kind"] == units["kind"] == units_run.kind
    assert bundle["units"]["tokens"] == units["tokens"]
    assert bundle["model_config"]["n_classes"] == len(units["tokens"])
    last_bias = list(bundle["state_dict"].values())[-1]  # the classifier's: one per token
    assert last_bias.shape == (len(units["tokens"]),)
    history = units_run.trained.load("training_history")
    if units_run.kind == "phones":
        # scored by phone error rate: a phone string has no words to take a WER of
        assert "val_per" in history and "val_cer" not in history
        assert "best_validation_per" in bundle["info"]
        # the registered lexicon holds the pronunciations of the LM's words, not the dictionary
        lm_words = set(arpa_vocabulary(units_run.trained.load("word_lm")))
        assert set(bundle["units"]["lexicon"]) <= lm_words and len(units["lexicon"]) > 100_000
    else:
        assert {"val_cer", "val_wer"} <= set(history) and "val_per" not in history
        assert isinstance(bundle["units"]["sentencepiece"], bytes)


def test_what_the_units_cannot_encode_is_counted(units_run, splits) -> None:
    report = units_run.trained.load("units_report")
    train = report["splits"]["train"]
    assert train["utterances"] == (splits.split == "train").sum()
    # what the trainer left out is what the report counts in the splits it trains on
    trained_on = ("train", "validation")
    excluded = sum(report["splits"][s]["utterances_excluded"] for s in trained_on)
    assert units_run.trained.load("acoustic_model")["info"]["excluded_utterances"] == excluded
    if units_run.kind == "phones":
        assert train["words_without_pronunciation"] >= 1
        guess = report["most_frequent_words_without_pronunciation"][units_run.missing]["g2p"]
        guessed = units_run.trained.load("output_units")["guessed"]
        if units_run.excluded:
            assert train["utterances_excluded"] == 1 and guess is None and not guessed
        else:  # pronounced by the grapheme-to-phoneme fallback, and trained on
            assert train["utterances_excluded"] == 0 and train["words_pronounced_by_g2p"] >= 1
            assert guess and units_run.missing in guessed
            assert units_run.missing in units_run.trained.load("acoustic_model")["units"]["guessed"]
    else:  # every normalised character is a piece: nothing is left out
        assert train["utterances_excluded"] == train["words_without_pronunciation"] == 0


def test_evaluation_scores_phones_by_per_and_words_by_wer(units_run, splits) -> None:
    transcripts = units_run.evaluated.load("evaluation_transcripts")
    report = units_run.evaluated.load("evaluation_report")
    metrics = units_run.evaluated.load("evaluation_metrics")
    assert report["utterances"] == (splits.split == "test").sum()
    assert {"wer", "cer"} <= set(report["decoders"]["beam"]) and "test_beam_wer" in metrics
    if units_run.kind == "phones":
        greedy = report["decoders"]["greedy"]
        assert "per" in greedy and "wer" not in greedy and "test_greedy_per" in metrics
        assert greedy["utterances_without_pronunciation"] >= 0
        assert transcripts.reference_units.str.len().gt(0).any()
        assert "greedy_per" in transcripts and "greedy_wer" not in transcripts
    else:
        assert {"wer", "cer"} <= set(report["decoders"]["greedy"])
        assert "test_greedy_cer" in metrics
    breakdown = units_run.evaluated.load("evaluation_breakdown")
    assert set(breakdown.decoder) == {"greedy", "beam"}


def test_transcripts_and_the_served_model_give_words(units_run, tmp_path) -> None:
    (result,) = units_run.inferred.load("transcriptions")
    assert not result["error"] and result["decoder"] == "beam"
    bundle = units_run.trained.load("acoustic_model")
    vocabulary = set(arpa_vocabulary(units_run.trained.load("word_lm")))
    assert set(result["text"].split()) <= vocabulary  # words of the LM, whatever the units
    path = tmp_path / "acoustic_model.pt"
    torch.save({k: v for k, v in bundle.items() if k != "source"}, path)
    served = SpeechRecognizerModel()
    served.load_context(SimpleNamespace(artifacts={"acoustic_model": str(path)}, model_config={}))
    audio = pd.DataFrame({"path": [result["path"]]})
    served.allowed_root = Path(result["path"]).parent
    answer = served.predict(None, audio)
    assert answer.error[0] == "" and answer.text[0] == result["text"]
    assert Recognizer.from_file(path).units.kind == units_run.kind


def _oracle_scores(units, rows: pd.DataFrame):
    """What a perfect acoustic model of ``units`` would output for ``rows``: each token of the
    transcript on one frame then two blanks (CTC's peaky output), as one batch of
    log-probabilities."""
    encoded = [units.encode(text) for text in rows.text]
    frames = [[t for token in ids for t in (token, 0, 0)] for ids in encoded]
    lengths = torch.tensor([len(f) for f in frames])
    scores = torch.full((len(frames), int(lengths.max()), len(units)), -8.0)
    for b, path in enumerate(frames):
        scores[b, torch.arange(len(path)), torch.tensor(path)] = 0.0
    items = [SimpleNamespace(text=text) for text in rows.text]
    return [(items, scores.log_softmax(dim=-1), lengths)]


def test_the_beam_search_is_tuned_in_the_models_own_units(units_run, splits, monkeypatch) -> None:
    """Fed what a perfect model of its units would output, the tuned beam search gives the
    words back: tuning spells the LM's words in the model's units, not in characters. (The
    training transcripts stand in for the tuning split: the LM knows all their words.)"""
    bundle = units_run.trained.load("acoustic_model")
    units = units_from_dict(bundle["units"])
    params = units_run.trained.load("params:beam_search")
    rows = splits[(splits.split == "train") & splits.text.map(units.can_encode)]
    rows = rows.assign(split=params["tune"]["split"])
    assert len(rows) > 0
    monkeypatch.setattr(decoder_nodes, "acoustic_scores", lambda *args: _oracle_scores(units, rows))
    lm = units_run.trained.load("word_lm")
    tuned = decoder_nodes.tune_beam_search(bundle, rows, lm, params, "test")
    assert min(g["wer"] for g in tuned["grid"]) < 0.1, tuned["grid"]


def test_the_seed_preset_outputs_characters_whatever_units_kind_says(parameters, splits) -> None:
    # seed is the original design (characters); a units.kind=phones run of it still spells
    params = merged(parameters, {"units": {"kind": "phones"}, "training": {"preset": "seed"}})
    dictionary = PronunciationDictionaryDataset().load()
    units, report = units_nodes.build_output_units(
        splits, dictionary, params["units"], params["training"]
    )
    assert units_from_dict(units).kind == "characters"
    assert report["splits"]["train"]["utterances_excluded"] == 0
    chosen = merged(params, {"training": {"preset": "default"}})
    units, _ = units_nodes.build_output_units(
        splits, dictionary, chosen["units"], chosen["training"]
    )
    assert units_from_dict(units).kind == "phones"
