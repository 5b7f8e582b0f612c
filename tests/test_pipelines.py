"""Each pipeline run in memory with ``SequentialRunner``, as Kedro's starters test theirs.

Every test builds a ``DataCatalog`` by hand: MemoryDatasets for the pipeline's inputs and for the
``params:`` entries (conf/base's parameters, made tiny), and a MemoryDataset for every other
dataset, so nothing is written to data/ and nothing touches MLflow (metrics, tags, artifacts and
the registered pyfunc are plain in-memory values here). The only real datasets are the feature
stores (``feature_cache``, ``features``): extraction's workers write shards into the store, read
back as one mapping, which a MemoryDataset cannot do.

The runs chain as ``kedro run`` chains them: data_engineering on the shared LibriSpeech sample
(dev-clean-2: three speakers, two utterances each), then features, a one-epoch model of 32 units,
its evaluation and inference with it. Each run happens once, in a module fixture. The same chain
runs for phone and subword units (training, evaluation, inference and the pyfunc), once each.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline

from asr_pipeline.audio.features import FeatureConfig
from asr_pipeline.audio.loading import load_audio
from asr_pipeline.datasets.pronunciations import PronunciationDictionaryDataset
from asr_pipeline.model.bundle import bundle_lm
from asr_pipeline.model.recognizer import Recognizer
from asr_pipeline.pipelines import (
    data_engineering,
    evaluation,
    feature_engineering,
    inference,
    language_model,
    training,
)
from asr_pipeline.pipelines.data_engineering.nodes import QUALITY_COLUMNS
from asr_pipeline.serving.pyfunc import SpeechRecognizerModel
from tests.in_memory import merged, outputs_of, persisted_datasets, run_in_memory
from tests.support import base_parameters

UTTERANCES_PER_SPEAKER = 2
TINY = {
    "data_engineering": {
        "train_subsets": ["dev-clean-2"],
        "test_subsets": ["dev-clean-2"],
        # of three speakers: one tests, one validates, one trains
        "shared_subset_test_fraction": 0.34,
        "validation_fraction": 0.5,
        "max_utterances_per_speaker": UTTERANCES_PER_SPEAKER,
    },
    "features": {"workers": 1, "speed_perturbation": []},
    # this chain is the character model's (test_units_pipelines.py runs phones and subwords;
    # phones are the default units)
    "units": {"kind": "characters"},
    "training": {
        "epochs": 1,
        "model": {"rnn_dim": 32, "n_rnn_layers": 1, "cnn_channels": 8},
        "batch_seconds": 30.0,
        "threads": 1,
        "device": "cpu",
        "resume": False,
    },
    "beam_search": {
        "beam_size": 4,
        "background_words": 20,
        "general_lm_prune": 1.0e-6,  # 8 MB of ARPA instead of the whole 100 MB
        "tune": {"lm_weight": [0.5], "word_score": [0.0], "batch_seconds": 30.0},
    },
    "evaluation": {"threads": 1, "batch_seconds": 30.0},
    "inference": {"threads": 1},
}
WORD_FREQUENCIES = pd.DataFrame(
    {"word": ["the", "and", "of", "to", "a", "in", "he", "was"], "frequency": range(80, 0, -10)}
)


@pytest.fixture(scope="module")
def pronunciations() -> pd.DataFrame:
    """The catalog's pronunciation dictionary (pocketsphinx's CMU dictionary)."""
    return PronunciationDictionaryDataset().load()


@pytest.fixture(scope="module")
def parameters(librispeech_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """conf/base's parameters, made tiny, reading the shared sample and writing to a tmp folder."""
    checkpoints = tmp_path_factory.mktemp("checkpoints")
    local = {
        "librispeech": {"root": str(librispeech_root), "download": False},
        "training": {"checkpoint_dir": str(checkpoints)},
    }
    return merged(merged(base_parameters(), TINY), local)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def data_run(parameters: dict) -> DataCatalog:
    return run_in_memory(data_engineering.create_pipeline(), parameters)


@pytest.fixture(scope="module")
def feature_run(parameters: dict, data_run: DataCatalog, store_root: Path) -> DataCatalog:
    pipeline = feature_engineering.create_pipeline()
    inputs = {"manifest_splits": data_run.load("manifest_splits")}
    return run_in_memory(pipeline, parameters, inputs, persisted_datasets(pipeline, store_root))


def _train(
    parameters: dict,
    data_run: DataCatalog,
    feature_run: DataCatalog,
    store_root: Path,
    pronunciations: pd.DataFrame,
    general_lm,
) -> DataCatalog:
    pipeline = language_model.create_pipeline() + training.create_pipeline()
    inputs = {
        "manifest_splits": data_run.load("manifest_splits"),
        "feature_index": feature_run.load("feature_index"),
        "normalisation_stats": feature_run.load("normalisation_stats"),
        "word_frequencies": WORD_FREQUENCIES,
        "general_lm": general_lm,
        "pronunciations": pronunciations,
    }
    return run_in_memory(pipeline, parameters, inputs, persisted_datasets(pipeline, store_root))


@pytest.fixture(scope="module")
def training_run(
    parameters: dict,
    data_run: DataCatalog,
    feature_run: DataCatalog,
    store_root: Path,
    pronunciations: pd.DataFrame,
    general_lm,
) -> DataCatalog:
    return _train(parameters, data_run, feature_run, store_root, pronunciations, general_lm)


def test_data_engineering(data_run: DataCatalog, librispeech_root: Path) -> None:
    assert data_run.load("librispeech_root") == str(librispeech_root.resolve())
    manifest, splits = data_run.load("manifest"), data_run.load("manifest_splits")
    assert manifest.subset.eq("dev-clean-2").all() and manifest.speaker_id.nunique() == 3
    assert set(splits.utterance_id) <= set(manifest.utterance_id)
    # speaker-disjoint: each speaker in exactly one split, and every split has one speaker
    assert splits.groupby("speaker_id").split.nunique().eq(1).all()
    assert splits.groupby("split").speaker_id.nunique().to_dict() == {
        "train": 1,
        "validation": 1,
        "test": 1,
    }
    assert splits.groupby("speaker_id").size().eq(UTTERANCES_PER_SPEAKER).all()
    assert splits.text.str.len().gt(0).all() and splits.duration_s.gt(0).all()
    report = data_run.load("data_quality_report")
    assert list(report.columns) == QUALITY_COLUMNS
    assert report.empty  # the shared sample is clean


def test_feature_engineering(feature_run: DataCatalog, data_run: DataCatalog, parameters) -> None:
    splits = data_run.load("manifest_splits")
    index = feature_run.load("feature_index")
    # without speed perturbation: one row of features per utterance, every utterance covered
    assert sorted(index.utterance_id) == sorted(splits.utterance_id)
    assert index.num_frames.gt(0).all()
    features = feature_run.load("features")
    assert set(index.feature_key) <= set(features.keys())
    n_features = FeatureConfig.from_params(parameters["features"]).n_features
    assert all(
        features[key].shape == (n_features, n)
        for key, n in index[["feature_key", "num_frames"]].itertuples(index=False, name=None)
    )
    stats = feature_run.load("normalisation_stats")
    assert len(stats["mean"]) == len(stats["std"]) == n_features
    assert all(s > 0 for s in stats["std"])
    assert isinstance(feature_run.load("feature_example_plot"), plt.Figure)


def test_training(training_run: DataCatalog, data_run: DataCatalog, general_lm) -> None:
    bundle = training_run.load("acoustic_model")
    assert bundle["model_config"]["rnn_dim"] == 32 and bundle["model_config"]["n_rnn_layers"] == 1
    assert bundle["info"]["epochs_trained"] == 1
    # the registered bundle carries the LM and the settings tuned on the validation speaker
    # the default LM: the general-English one (beam_search.lm_source), pruned here, as ARPA text
    # compressed (a .arpa.gz file)
    lm = training_run.load("word_lm").text()
    assert lm.startswith("\\data\\") and lm.endswith("\\end\\\n")
    header = dict(line.split("=") for line in lm[:200].splitlines() if line.startswith("ngram "))
    assert int(header["ngram 1"]) == len(general_lm.vocabulary)
    assert 0 < int(header["ngram 3"]) < len(general_lm.orders[2].log10_prob)
    settings = training_run.load("beam_settings")
    assert settings["split"] == "validation" and len(settings["grid"]) == 1
    assert bundle_lm(bundle["decoder"]).text() == lm
    assert bundle["decoder"]["beam"]["lm_weight"] == settings["lm_weight"]
    assert "decoder" not in training_run.load("trained_acoustic_model")

    recognizer = Recognizer(bundle, threads=1)
    test = data_run.load("manifest_splits").query("split == 'test'").iloc[0]
    signal = load_audio(test.path, recognizer.sample_rate)
    for decoder in ("greedy", "beam"):
        (text,) = recognizer.transcribe([signal], recognizer.decoder(decoder))
        assert isinstance(text, str)

    history = training_run.load("training_history")
    assert history.epoch.tolist() == [1]
    assert {"train_loss", "val_loss", "val_cer", "val_wer", "learning_rate"} <= set(history)
    metrics = training_run.load("training_metrics")
    assert [m["step"] for m in metrics["train_loss"]] == [1]
    tags = training_run.load("training_tags")
    assert {"git_commit", "manifest_sha1", "feature_params"} <= set(tags)
    assert tags["train_utterances"] == str(UTTERANCES_PER_SPEAKER)
    assert isinstance(training_run.load("training_curves"), plt.Figure)
    # the pyfunc the catalog logs and registers, whatever its dataset is called
    (pyfunc,) = outputs_of(training.create_pipeline(), "package_recognizer")
    assert isinstance(training_run.load(pyfunc), SpeechRecognizerModel)


def test_evaluation(training_run: DataCatalog, data_run: DataCatalog, parameters) -> None:
    # promote_model talks to the MLflow model registry (it tags the version this run registered
    # and moves the champion alias): tests/test_promotion.py and the end-to-end run cover it.
    pipeline = evaluation.create_pipeline()
    pipeline = pipeline - Pipeline([n for n in pipeline.nodes if n.name == "promote_model"])
    splits = data_run.load("manifest_splits")
    inputs = {
        "acoustic_model": training_run.load("acoustic_model"),
        "manifest_splits": splits,
        "pronunciations": pd.DataFrame(columns=["word", "pronunciation"]),  # characters: unread
    }
    catalog = run_in_memory(pipeline, parameters, inputs)

    transcripts = catalog.load("evaluation_transcripts")
    test = splits[splits.split == "test"]
    assert sorted(transcripts.utterance_id) == sorted(test.utterance_id)
    assert transcripts.set_index("utterance_id").reference.to_dict() == dict(
        zip(test.utterance_id, test.text, strict=True)
    )
    for decoder in ("greedy", "beam"):
        assert {f"{decoder}_hypothesis", f"{decoder}_wer", f"{decoder}_cer"} <= set(transcripts)
    report = catalog.load("evaluation_report")
    assert report["split"] == "test" and report["utterances"] == len(test)
    assert set(report["decoders"]) == {"greedy", "beam"}
    assert all(rates["cer"] >= 0 for rates in report["decoders"].values())
    breakdown = catalog.load("evaluation_breakdown")
    assert set(breakdown.level) == {"subset", "speaker_id"}
    metrics = catalog.load("evaluation_metrics")
    assert {"test_greedy_wer", "test_greedy_cer", "test_beam_wer", "test_beam_cer"} <= set(metrics)
    assert isinstance(catalog.load("evaluation_plots"), plt.Figure)


def test_inference(training_run: DataCatalog, data_run: DataCatalog, parameters, tmp_path) -> None:
    utterance = data_run.load("manifest_splits").query("split == 'test'").iloc[0]
    missing = tmp_path / "missing.flac"
    asked = {"inputs": [utterance.utterance_id, str(missing), "9999-1-0001"]}
    catalog = run_in_memory(
        inference.create_pipeline(),
        merged(parameters, {"inference": asked}),
        {"inference_model": training_run.load("acoustic_model")},
    )
    found, no_file, no_id = catalog.load("transcriptions")
    assert found["input"] == utterance.utterance_id and not found["error"]
    assert Path(found["path"]).resolve() == Path(utterance.path).resolve()
    assert found["reference"] == utterance.text
    assert found["decoder"] == "beam"  # auto: the model carries its beam search
    assert isinstance(found["text"], str) and found["duration_s"] > 0
    assert str(missing) in no_file["error"] and not no_file["text"]
    assert "not found" in no_id["error"]
