"""The training loop on real LibriSpeech features: overfitting, resuming, stopping, DDP."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml

from asr_pipeline.audio.extraction import compute_features
from asr_pipeline.audio.features import (
    FeatureConfig,
    FeatureExtractor,
    NormalisationStats,
    RunningStats,
)
from asr_pipeline.datasets.feature_store import FeatureStoreDataset
from asr_pipeline.decoding.ctc import (
    BeamSearchConfig,
    BeamSearchDecoder,
    greedy_decode,
    write_lexicon,
)
from asr_pipeline.decoding.language_model import build_arpa
from asr_pipeline.decoding.metrics import error_rates
from asr_pipeline.model.acoustic import AcousticModel, ModelConfig
from asr_pipeline.model.bundle import make_bundle
from asr_pipeline.model.recognizer import Recognizer
from asr_pipeline.pipelines.training.decoder_nodes import attach_beam_search, tune_beam_search
from asr_pipeline.trainer import loop as trainer_module
from asr_pipeline.trainer.batching import BatchLoader
from asr_pipeline.trainer.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_NAME
from asr_pipeline.trainer.config import NON_RECIPE_KEYS, TrainingConfig
from asr_pipeline.trainer.loop import Trainer
from asr_pipeline.trainer.preemption import Preempted
from asr_pipeline.trainer.stopping import StopReason
from asr_pipeline.units.characters import normalise
from tests.support import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TRAINING_PARAMS = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_training.yml").read_text())[
    "training"
]
FEATURE_PARAMS = yaml.safe_load(
    (PROJECT_ROOT / "conf/base/parameters_feature_engineering.yml").read_text()
)["features"]
FEATURE_CONFIG = FeatureConfig.from_params(FEATURE_PARAMS)
FRAMES_PER_SECOND = FEATURE_CONFIG.sample_rate / FEATURE_CONFIG.hop_length
TINY_MODEL = ModelConfig.from_dict(
    {
        **TRAINING_PARAMS["presets"]["default"],
        "n_features": FEATURE_CONFIG.n_features,
        "cnn_channels": 8,
        "n_residual_blocks": 1,
        "rnn_dim": 32,
        "n_rnn_layers": 1,
        "dropout": 0.1,
    }
)


@dataclass
class Corpus:
    """Real features of the shortest train-clean-100 utterances of the shared sample."""

    index: pd.DataFrame  # shortest first
    features_path: Path
    stats: NormalisationStats
    audio: dict[str, Path]  # utterance_id -> flac

    @property
    def features(self):
        return FeatureStoreDataset(str(self.features_path)).load()

    def subset(self, n: int, validation: bool = False) -> pd.DataFrame:
        train = self.index.head(n).assign(split="train")
        if not validation:
            return train.reset_index(drop=True)
        return pd.concat([train, train.assign(split="validation")], ignore_index=True)


def _transcripts(chapter_dir: Path) -> dict[str, str]:
    lines = next(chapter_dir.glob("*.trans.txt")).read_text(encoding="utf-8").splitlines()
    return dict(line.split(" ", 1) for line in lines if line.strip())


@pytest.fixture(scope="module")
def corpus(librispeech_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    files = sorted((librispeech_root / "train-clean-100").glob("*/*/*.flac"))
    durations = sorted((sf.info(str(f)).duration, f.name, f) for f in files)[:12]
    assert len(durations) == 12, "the shared sample has fewer than 12 train-clean-100 files"
    extractor = FeatureExtractor(FEATURE_CONFIG)
    features_path = tmp_path_factory.mktemp("features")
    chunk, rows, audio = {}, [], {}
    for duration, _, path in durations:
        utterance_id = path.stem
        text, unknown = normalise(_transcripts(path.parent)[utterance_id])
        assert text and not unknown
        key = f"{utterance_id}.{FEATURE_CONFIG.fingerprint()}"
        chunk[key] = compute_features(str(path), extractor)
        audio[utterance_id] = path
        rows.append(
            {
                "utterance_id": utterance_id,
                "split": "train",
                "subset": "train-clean-100",
                "speaker_id": utterance_id.split("-")[0],
                "duration_s": duration,
                "text": text,
                "feature_key": key,
                "num_frames": chunk[key].shape[1],
            }
        )
    FeatureStoreDataset(str(features_path)).save(chunk)
    index = pd.DataFrame(rows)
    store = FeatureStoreDataset(str(features_path)).load()
    assert set(store) == set(index.feature_key)
    running = RunningStats(FEATURE_CONFIG.n_features)
    for key in index.feature_key:  # all of them are training utterances
        running.update(store[key].float())
    return Corpus(index, features_path, running.result(), audio)


def training_config(tmp_path: Path, **overrides) -> TrainingConfig:
    """The project's recipe, made small, quiet and single-threaded."""
    params = {
        **TRAINING_PARAMS,
        "threads": 1,
        "device": "cpu",
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "log_every_steps": 1000,
        # batches built between steps: a worker process per epoch costs more than it saves on
        # these tiny runs (test_resumed_run_ends_with_the_same_weights uses workers)
        "loader": {"workers": 0, "prefetch_batches": 2},
    }
    return replace(TrainingConfig.from_params(params), **overrides)


def make_trainer(
    corpus: Corpus, model: ModelConfig, config: TrainingConfig, index: pd.DataFrame
) -> Trainer:
    return Trainer(model, config, index, corpus.features, corpus.stats, FRAMES_PER_SECOND)


def load_checkpoint(config: TrainingConfig) -> dict:
    return torch.load(Path(config.checkpoint_dir) / CHECKPOINT_NAME, weights_only=True)


# -- configuration -----------------------------------------------------------------------------
def test_the_recipe_comes_from_the_yaml_alone() -> None:
    config = TrainingConfig.from_params(TRAINING_PARAMS)
    recipe = {name: value for name, value in TRAINING_PARAMS.items() if name not in NON_RECIPE_KEYS}
    assert {**asdict(config), "betas": list(config.betas)} == recipe
    with pytest.raises(TypeError):  # no defaults that could disagree with the YAML
        TrainingConfig()  # type: ignore[call-arg]


def test_unknown_and_missing_training_keys_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) \['epoch'\]; known: "):
        TrainingConfig.from_params({**TRAINING_PARAMS, "epoch": 3})
    with pytest.raises(ValueError, match=r"missing training setting\(s\) \['grad_clip'\]"):
        TrainingConfig.from_params({k: v for k, v in TRAINING_PARAMS.items() if k != "grad_clip"})
    with pytest.raises(ValueError, match=r"unknown spec_augment setting\(s\) \['freq_masks'\]"):
        TrainingConfig.from_params(
            {**TRAINING_PARAMS, "spec_augment": {"freq_masks": 2, "time_mask": 30}}
        )
    for threshold in (0, -1):  # null turns glibc's threshold off; 0 would be a silent synonym
        with pytest.raises(ValueError, match=r"malloc_mmap_threshold_mb must be a positive"):
            TrainingConfig.from_params({**TRAINING_PARAMS, "malloc_mmap_threshold_mb": threshold})
    for cache in (-1, 0.5, True, "0"):
        with pytest.raises(ValueError, match=r"onednn_primitive_cache must be 0 or more kernels"):
            TrainingConfig.from_params({**TRAINING_PARAMS, "onednn_primitive_cache": cache})
    for load in (0, 1, "false"):
        with pytest.raises(ValueError, match=r"load_triton_without_gpu must be true, false or"):
            TrainingConfig.from_params({**TRAINING_PARAMS, "load_triton_without_gpu": load})
    # the keys read elsewhere (model presets, registry name) may be there or not
    recipe_only = {k: v for k, v in TRAINING_PARAMS.items() if k not in NON_RECIPE_KEYS}
    assert TrainingConfig.from_params(recipe_only) == TrainingConfig.from_params(TRAINING_PARAMS)


# -- overfitting -------------------------------------------------------------------------------
def test_default_preset_overfits_eight_short_utterances(
    corpus: Corpus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The 8 shortest utterances of the sample (1.9-2.4 s; speaker 19 alone has only 3 under 6 s),
    # trained on and validated on; ~240 updates of two utterances each at the default rate.
    index = corpus.subset(8, validation=True)
    model_config = ModelConfig.from_dict(
        {**TRAINING_PARAMS["presets"]["default"], "n_features": 80, "dropout": 0.0}
    )
    config = training_config(
        tmp_path,
        epochs=60,
        batch_seconds=5.0,
        learning_rate=2e-3,
        pct_start=0.1,
        weight_decay=0.0,
        spec_augment={},
        early_stopping_patience=60,
    )
    result = make_trainer(corpus, model_config, config, index).fit()
    assert result.best_validation_cer < 0.05, [h["val_cer"] for h in result.history]
    assert result.history[result.best_epoch - 1]["val_cer"] == result.best_validation_cer
    assert result.history[-1]["train_loss"] < 0.2 * result.history[0]["train_loss"]

    # the end-to-end path: audio file -> recognizer bundle -> the same texts
    bundle = make_bundle(model_config, result.state_dict, FEATURE_CONFIG, corpus.stats, {})
    recognizer = Recognizer(bundle)
    train = index[index.split == "train"]
    references = train.text.tolist()
    from_audio = [recognizer.transcribe_file(corpus.audio[u]) for u in train.utterance_id]
    assert error_rates(references, from_audio).cer < 0.05, list(
        zip(references, from_audio, strict=True)
    )

    # ... which are what the trainer's validation decodes from the stored features
    model = AcousticModel(model_config)
    model.load_state_dict(result.state_dict)
    model.eval()
    batch = BatchLoader(train, corpus.features, corpus.stats).load(range(len(train)))
    with torch.inference_mode():
        from_features = greedy_decode(*model(batch.features, batch.feature_lengths))
    assert from_features == from_audio
    assert error_rates(references, from_features).cer == pytest.approx(result.best_validation_cer)

    # beam search with the transcript LM and lexicon does at least as well as greedy decoding
    lm_path = tmp_path / "lm.arpa"
    lm_path.write_text(build_arpa(references, order=3))
    lexicon = write_lexicon([w for text in references for w in text.split()], tmp_path / "lex.txt")
    beam_config = BeamSearchConfig(
        beam_size=16, lm_weight=0.5, word_score=0.0, lm_order=3, background_words=0, lexicon=False
    )
    beam = BeamSearchDecoder(beam_config, lm_path, lexicon)
    with torch.inference_mode():
        from_beam = beam(*model(batch.features, batch.feature_lengths))
    assert error_rates(references, from_beam).wer <= error_rates(references, from_features).wer

    # beam settings are tuned on the validation split from the audio; the test split is not read
    manifest = pd.concat(
        [
            train.assign(
                split="validation", path=[str(corpus.audio[u]) for u in train.utterance_id]
            ),
            train.assign(split="test", path="/nonexistent/never-read.flac"),
        ]
    )
    params = {
        "beam_size": 16,
        "lm_weight": 0.5,
        "word_score": 0.0,
        "lm_order": 3,
        "background_words": 0,
        "lexicon": True,
        "tune": {
            "split": "validation",
            "lm_weight": [0.5],
            "word_score": [-40.0, 0.0],
            "batch_seconds": 30.0,
            "max_utterances": None,
            "workers": 2,  # the grid's pairs decoded in two forked processes
        },
    }
    lm_text = lm_path.read_text()
    with caplog.at_level(logging.INFO):
        tuned = tune_beam_search(bundle, manifest, lm_text, params, "test")
    assert "Skipping" not in caplog.text
    assert len(tuned["grid"]) == 2 and tuned["split"] == "validation"
    by_score = {g["word_score"]: g["wer"] for g in tuned["grid"]}
    assert by_score[-40.0] > by_score[0.0], by_score  # a word penalty of 40 drops words
    assert (tuned["lm_weight"], tuned["word_score"]) == (0.5, 0.0)
    # one process decodes the same grid; a bounded slice decodes fewer utterances
    one = {**params, "tune": {**params["tune"], "workers": 1}}
    assert tune_beam_search(bundle, manifest, lm_text, one, "test")["grid"] == tuned["grid"]
    two = {**params, "tune": {**params["tune"], "max_utterances": 2}}
    sliced = tune_beam_search(bundle, manifest, lm_text, two, "test")["grid"]
    assert 0 < sliced[0]["reference_words"] < tuned["grid"][0]["reference_words"]
    untuned = tune_beam_search(bundle, manifest, lm_text, {**params, "tune": None}, "test")
    assert (untuned["lm_weight"], untuned["word_score"], untuned["grid"]) == (0.5, 0.0, [])
    with pytest.raises(ValueError, match="evaluated split"):
        tune_beam_search(bundle, manifest, lm_text, params, "validation")

    # the kept bundle carries that beam search: saved and loaded (weights only), it decodes with
    # the LM by default, as well as the beam search above
    saved = tmp_path / "with_beam_search.pt"
    torch.save(attach_beam_search(bundle, lm_text, tuned, params), saved)
    carrying = Recognizer.from_file(saved)
    assert carrying.beam_search["beam"]["beam_size"] == 16
    assert carrying.beam_search["tuning"]["split"] == "validation"
    assert carrying.decoder_name("auto") == "beam" and recognizer.decoder_name("auto") == "greedy"
    with_lm = [carrying.transcribe_file(corpus.audio[u]) for u in train.utterance_id]
    assert error_rates(references, with_lm).wer <= error_rates(references, from_audio).wer
    assert [carrying.transcribe_file(corpus.audio[u], "greedy") for u in train.utterance_id] == (
        from_audio
    )


# -- speed perturbation ------------------------------------------------------------------------
def test_each_epoch_draws_one_speed_per_utterance(corpus: Corpus, tmp_path: Path) -> None:
    originals = corpus.subset(6)
    variants = [originals.assign(speed=speed) for speed in (0.9, 1.1)]
    index = pd.concat([originals.assign(speed=1.0), *variants], ignore_index=True)
    config = training_config(tmp_path, epochs=8, batch_seconds=6.0)
    trainer = make_trainer(corpus, TINY_MODEL, config, index)
    speeds_seen = set()
    for epoch, batches in enumerate(trainer.epoch_batches):
        rows = [row for batch in batches for row in batch]
        chosen = trainer.train_index.iloc[rows]
        assert sorted(chosen.utterance_id) == sorted(originals.utterance_id), epoch
        if epoch == 0:  # SortaGrad: the original speed, short to long
            assert (chosen.speed == 1.0).all()
        speeds_seen |= set(chosen.speed)
    assert speeds_seen == {0.9, 1.0, 1.1}
    # rebuilt identically (what resuming relies on)
    again = make_trainer(corpus, TINY_MODEL, config, index)
    assert again.epoch_batches == trainer.epoch_batches
    # without variants nothing changes: every training row, every epoch
    plain = make_trainer(corpus, TINY_MODEL, config, originals)
    for batches in plain.epoch_batches:
        assert sorted(row for batch in batches for row in batch) == list(range(len(originals)))


# -- resuming ----------------------------------------------------------------------------------
def test_resumed_run_ends_with_the_same_weights(
    corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = corpus.subset(10)
    # dropout and SpecAugment stay on: the random state has to be carried over too; and so
    # does the weights' moving average, which is what the result keeps
    settings = {
        "epochs": 3,
        "batch_seconds": 6.0,
        "early_stopping_patience": 10,
        "ema_decay": 0.9,
    }
    config_a = training_config(tmp_path / "a", **settings)
    # ... and the batches must not depend on how many DataLoader workers build them
    workers = {"workers": 2, "prefetch_batches": 2}
    config_b = training_config(tmp_path / "b", **settings, loader=workers)
    assert config_a.spec_augment and config_a.loader["workers"] == 0

    result_a = make_trainer(corpus, TINY_MODEL, config_a, index).fit()
    assert len(result_a.history) == 3

    interrupted = make_trainer(corpus, TINY_MODEL, config_b, index)
    steps_per_epoch = [len(batches) for batches in interrupted.epoch_batches]
    assert steps_per_epoch[2] >= 2
    stop_at = steps_per_epoch[0] + steps_per_epoch[1] + 2  # mid-epoch 3
    calls = 0
    original_loss = trainer_module.batch_loss

    def interrupting_loss(model, batch, device):
        nonlocal calls
        calls += 1  # training steps only: validation has its own reference to batch_loss
        if calls == stop_at:
            raise KeyboardInterrupt
        return original_loss(model, batch, device)

    monkeypatch.setattr(trainer_module, "batch_loss", interrupting_loss)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    monkeypatch.undo()
    assert calls == stop_at
    saved = load_checkpoint(config_b)
    assert saved["epoch"] == 1 and not saved["complete"]
    assert saved["format"] == CHECKPOINT_FORMAT
    assert saved["cycle_position"] == steps_per_epoch[0] + steps_per_epoch[1]

    result_b = make_trainer(corpus, TINY_MODEL, config_b, index).fit()
    assert [h["epoch"] for h in result_b.history] == [1, 2, 3]
    assert result_a.stop_reason is result_b.stop_reason is StopReason.ALL_EPOCHS
    assert [h["learning_rate"] for h in result_b.history] == [
        h["learning_rate"] for h in result_a.history
    ]
    np.testing.assert_allclose(
        [h["train_loss"] for h in result_b.history],
        [h["train_loss"] for h in result_a.history],
        rtol=1e-6,
    )
    final_a, final_b = load_checkpoint(config_a), load_checkpoint(config_b)
    assert final_a["complete"] and final_b["complete"] and final_b["epoch"] == 2
    assert final_a["model"].keys() == final_b["model"].keys()
    for name, weight in final_a["model"].items():
        torch.testing.assert_close(final_b["model"][name], weight, atol=1e-6, rtol=0, msg=name)
    assert final_b["averaged"]["n_averaged"] == final_a["averaged"]["n_averaged"] > 0
    for name, weight in final_a["averaged"].items():
        torch.testing.assert_close(final_b["averaged"][name], weight, atol=1e-6, rtol=0, msg=name)
    for name, weight in result_a.state_dict.items():
        torch.testing.assert_close(result_b.state_dict[name], weight, atol=1e-6, rtol=0)


def test_a_checkpoint_of_the_old_format_is_refused(
    corpus: Corpus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # written before the learning-rate schedule was a function of the position: the scheduler's
    # state instead of a position, and no format
    index = corpus.subset(4)
    config = training_config(tmp_path, epochs=2, batch_seconds=6.0)
    trainer = make_trainer(corpus, TINY_MODEL, config, index)
    old = {
        "fingerprint": trainer.checkpoint.fingerprint,
        "complete": False,
        "model": trainer.model.state_dict(),
        "averaged": trainer.averaged.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": {"last_epoch": 3},
        "torch_rng": torch.get_rng_state(),
        "epoch": 0,
        "history": [{"epoch": 1, "epoch_seconds": 1.0}],
    }
    Path(config.checkpoint_dir).mkdir(parents=True)
    torch.save(old, Path(config.checkpoint_dir) / CHECKPOINT_NAME)
    with caplog.at_level(logging.INFO):
        result = trainer.fit()
    assert (
        f"is of format 1, not {CHECKPOINT_FORMAT}" in caplog.text
        and "starting afresh" in caplog.text
    )
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert load_checkpoint(config)["format"] == CHECKPOINT_FORMAT


# -- weight averaging ------------------------------------------------------------------------
def test_the_weight_average_is_validated_and_kept(corpus: Corpus, tmp_path: Path) -> None:
    index = corpus.subset(6, validation=True)
    config = training_config(tmp_path, epochs=2, batch_seconds=6.0, ema_decay=0.99)
    trainer = make_trainer(corpus, TINY_MODEL, config, index)
    result = trainer.fit()
    last = result.history[-1]
    # the trained weights' own figures are logged beside the average's, and they differ
    assert last["val_loss_raw"] != pytest.approx(last["val_loss"])
    assert trainer.validate(trainer.model) == {
        name: last[f"{name}_raw"] for name in ("val_loss", "val_cer", "val_wer")
    }
    assert trainer.validate(trainer.averaged.module)["val_loss"] == last["val_loss"]
    # the best epoch's weights are the average's
    kept = AcousticModel(TINY_MODEL)
    kept.load_state_dict(result.state_dict)
    best = result.history[result.best_epoch - 1]
    assert trainer.validate(kept)["val_loss"] == pytest.approx(best["val_loss"], rel=1e-6)
    # without an average, nothing is logged twice
    plain_config = training_config(tmp_path / "plain", epochs=1, ema_decay=None)
    plain = make_trainer(corpus, TINY_MODEL, plain_config, index)
    assert plain.averaged is None
    assert not any(name.endswith("_raw") for name in plain.fit().history[0])


# -- stopping ----------------------------------------------------------------------------------
def test_early_stopping_without_learning(corpus: Corpus, tmp_path: Path) -> None:
    index = corpus.subset(4, validation=True)
    config = training_config(
        tmp_path, epochs=6, learning_rate=0.0, early_stopping_patience=1, spec_augment={}
    )
    result = make_trainer(corpus, TINY_MODEL, config, index).fit()
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.stop_reason is StopReason.NO_GAIN
    assert result.history[1]["val_cer"] >= result.history[0]["val_cer"]
    assert result.best_epoch == 1
    assert load_checkpoint(config)["complete"]


@pytest.mark.parametrize("max_minutes", [0.001, 1e-7])
def test_time_budget_stops_in_the_first_epoch(
    corpus: Corpus, tmp_path: Path, max_minutes: float
) -> None:
    index = corpus.subset(10, validation=True)
    config = training_config(tmp_path, epochs=5, max_minutes=max_minutes, batch_seconds=6.0)
    trainer = make_trainer(corpus, TINY_MODEL, config, index)
    first_epoch = trainer.epoch_batches[0]
    assert len(first_epoch) > 3
    result = trainer.fit()
    assert len(result.history) == 1
    assert result.stop_reason is StopReason.TIME_BUDGET
    assert result.best_epoch == 1 and np.isfinite(result.best_validation_cer)
    assert result.state_dict.keys() == trainer.model.state_dict().keys()
    assert not load_checkpoint(config)["complete"]  # a run stopped by its budget can go on
    seconds = [index.num_frames.iloc[b].sum() / FRAMES_PER_SECOND for b in first_epoch]
    # stopped within the first epoch (0.06 s is a few steps of this model at most) ...
    assert seconds[0] <= result.audio_seconds_seen < sum(seconds)
    if max_minutes < 1e-6:  # ... and right after the first step when the budget is ~nothing
        assert result.audio_seconds_seen == pytest.approx(seconds[0])


def test_learning_rate_anneals_by_the_time_budget(corpus: Corpus, tmp_path: Path) -> None:
    index = corpus.subset(6, validation=True)
    budget_seconds = 5.0
    config = training_config(
        tmp_path,
        epochs=2000,
        max_minutes=budget_seconds / 60,
        batch_seconds=6.0,
        early_stopping_patience=1000,
    )
    trainer = make_trainer(corpus, TINY_MODEL, config, index)
    result = trainer.fit()
    epochs = len(result.history)
    assert 1 < epochs < 2000  # the budget, not the epochs, ended the run
    assert result.stop_reason is StopReason.TIME_BUDGET
    steps = sum(len(batches) for batches in trainer.epoch_batches[:epochs])
    assert steps / trainer.total_steps < 0.1  # by steps alone it would still be warming up ...
    rates = [h["learning_rate"] for h in result.history]
    assert max(rates) > 0.5 * config.learning_rate  # ... but it went through its peak ...
    assert rates[-1] < 0.1 * config.learning_rate  # ... and annealed by the deadline
    assert result.train_seconds == pytest.approx(budget_seconds, rel=0.5)


def test_budget_counts_the_whole_run_and_a_larger_one_goes_on(
    corpus: Corpus, tmp_path: Path
) -> None:
    index = corpus.subset(6, validation=True)
    config = training_config(
        tmp_path, epochs=2000, max_minutes=1.0 / 60, early_stopping_patience=1000
    )
    first = make_trainer(corpus, TINY_MODEL, config, index).fit()
    assert not load_checkpoint(config)["complete"]
    # the same budget again: what is left of it, not a new one (at most one more short epoch)
    again = make_trainer(corpus, TINY_MODEL, config, index).fit()
    assert again.stop_reason.resumable
    assert again.history[: len(first.history)] == first.history
    longest_epoch = max(h["epoch_seconds"] for h in again.history)
    assert again.train_seconds <= 1.0 + longest_epoch + 0.2
    # a larger budget goes on from where the run stopped
    longer = make_trainer(corpus, TINY_MODEL, replace(config, max_minutes=5.0 / 60), index).fit()
    assert len(longer.history) > len(again.history)
    assert longer.history[: len(again.history)] == again.history
    assert longer.train_seconds > 1.5


# -- distributed -------------------------------------------------------------------------------
@dataclass
class DDPJob:
    world_size: int
    port: int
    corpus: Corpus
    config: TrainingConfig
    index: pd.DataFrame
    out_dir: str
    sigterm_rank0_at_step: int = 0  # > 0: rank 0 alone gets SIGTERM during that training step


def _sigterm_at(step: int) -> None:
    """Send this process SIGTERM during its ``step``-th training step."""
    original, calls = trainer_module.batch_loss, 0

    def terminated_loss(model, batch, device):
        nonlocal calls
        calls += 1
        if calls == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(model, batch, device)

    trainer_module.batch_loss = terminated_loss


def _ddp_worker(rank: int, job: DDPJob) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(job.port),
        WORLD_SIZE=str(job.world_size),
        RANK=str(rank),
        OMP_NUM_THREADS="1",
    )
    import torch.distributed as dist

    if rank == 0 and job.sigterm_rank0_at_step:
        _sigterm_at(job.sigterm_rank0_at_step)
    try:
        try:
            result = make_trainer(job.corpus, TINY_MODEL, job.config, job.index).fit()
        except Preempted:
            Path(job.out_dir, f"rank{rank}.preempted").touch()
            return
        losses = [h["train_loss"] for h in result.history]
        Path(job.out_dir, f"rank{rank}.json").write_text(pd.Series(losses).to_json())
        torch.save(result.state_dict, Path(job.out_dir, f"rank{rank}.pt"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_process_ddp_matches_one_process(corpus: Corpus, tmp_path: Path) -> None:
    index = corpus.subset(8)
    settings = {
        "epochs": 2,
        "batch_seconds": 10.0,
        "spec_augment": {},
        "early_stopping_patience": 5,
    }
    single_config = training_config(tmp_path / "single", **settings)
    single = make_trainer(corpus, TINY_MODEL, single_config, index)
    # every global batch has an even number of utterances, so both ranks get equal shares
    assert all(len(b) % 2 == 0 for batches in single.epoch_batches for b in batches)
    single_losses = [h["train_loss"] for h in single.fit().history]

    # batch_seconds is per rank: two ranks of 5 s make the single process's 10-s batches
    ddp_config = training_config(tmp_path / "ddp", **{**settings, "batch_seconds": 5.0})
    torch.multiprocessing.spawn(
        _ddp_worker,
        args=(DDPJob(2, free_port(), corpus, ddp_config, index, str(tmp_path)),),
        nprocs=2,
        join=True,
    )
    rank_losses = [
        pd.read_json(tmp_path / f"rank{rank}.json", typ="series").tolist() for rank in (0, 1)
    ]
    assert len(rank_losses[0]) == len(single_losses) == 2
    # Each rank logs the global batch's loss (averaged over ranks), which equals the single
    # process's up to batch norm statistics being per rank (seen: within 0.05%).
    np.testing.assert_allclose(rank_losses[0], single_losses, rtol=0.01)
    np.testing.assert_allclose(rank_losses[1], rank_losses[0], rtol=1e-6)
    # gradients are all-reduced: both ranks end with the same weights
    weights = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    for name, weight in weights[0].items():
        if "running" not in name and "num_batches" not in name:
            torch.testing.assert_close(weights[1][name], weight, msg=name)


def test_bf16_autocast_trains_close_to_fp32(corpus: Corpus, tmp_path: Path) -> None:
    index = corpus.subset(6)
    batch = BatchLoader(index, corpus.features, corpus.stats).load(range(len(index)))
    torch.manual_seed(0)
    model = AcousticModel(TINY_MODEL)
    fp32, _, _ = trainer_module.batch_loss(model, batch, torch.device("cpu"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16, log_probs, _ = trainer_module.batch_loss(model, batch, torch.device("cpu"))
    assert log_probs.dtype == torch.float32  # the CTC loss is taken in fp32
    assert bf16.item() == pytest.approx(fp32.item(), rel=0.02)

    settings = {"epochs": 6, "batch_seconds": 6.0, "spec_augment": {}, "precision": "bf16"}
    result = make_trainer(corpus, TINY_MODEL, training_config(tmp_path, **settings), index).fit()
    losses = [h["train_loss"] for h in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0], losses
    with pytest.raises(ValueError, match="precision"):
        TrainingConfig.from_params({**TRAINING_PARAMS, "precision": "fp8"})


def test_a_run_stopped_by_sigterm_mid_epoch_resumes_to_the_same_weights(
    corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = corpus.subset(10, validation=True)  # validated after each epoch, as a real run
    # dropout, SpecAugment and the weight average on: the random state and the epoch's place
    # must come back exactly
    settings = {"epochs": 3, "batch_seconds": 6.0, "early_stopping_patience": 10, "ema_decay": 0.9}
    whole = make_trainer(corpus, TINY_MODEL, training_config(tmp_path / "a", **settings), index)
    result_a = whole.fit()

    config_b = training_config(tmp_path / "b", **settings)
    preempted = make_trainer(corpus, TINY_MODEL, config_b, index)
    steps_per_epoch = [len(batches) for batches in preempted.epoch_batches]
    assert steps_per_epoch[1] >= 3
    stop_at = steps_per_epoch[0] + 2  # the second step of epoch 2
    calls = 0
    original_loss = trainer_module.batch_loss

    def terminated_loss(model, batch, device):
        nonlocal calls
        calls += 1
        if calls == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)  # what a cluster sends before it kills a job
        return original_loss(model, batch, device)

    monkeypatch.setattr(trainer_module, "batch_loss", terminated_loss)
    with pytest.raises(Preempted, match="SIGTERM in epoch 2 after step 2"):
        preempted.fit()
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again
    saved = load_checkpoint(config_b)
    assert (saved["epoch"], saved["steps_in_epoch"], saved["complete"]) == (0, 2, False)
    assert len(saved["epoch_progress"]["losses"]) == 2

    resumed = make_trainer(corpus, TINY_MODEL, config_b, index).fit()
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.audio_seconds_seen == pytest.approx(result_a.audio_seconds_seen)
    for h_a, h_b in zip(result_a.history, resumed.history, strict=True):
        assert h_b["train_loss"] == pytest.approx(h_a["train_loss"], rel=1e-6)
        assert h_b["val_cer"] == h_a["val_cer"]
    for name, weight in result_a.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[name], weight, msg=name)


def test_checkpoints_inside_epochs_every_few_minutes(corpus: Corpus, tmp_path: Path) -> None:
    index = corpus.subset(10)
    config = training_config(
        tmp_path, epochs=1, batch_seconds=6.0, checkpoint_every_minutes=1e-9, ema_decay=None
    )
    trainer = make_trainer(corpus, TINY_MODEL, config, index)
    saves = []
    original = trainer.checkpoint.save

    def counted_save(state, *args) -> None:
        saves.append(state.steps_in_epoch)
        original(state, *args)

    object.__setattr__(trainer.checkpoint, "save", counted_save)  # a frozen dataclass
    trainer.fit()
    steps = len(trainer.epoch_batches[0])
    assert saves == [*range(1, steps + 1), 0]  # after every step, then the epoch's own


def test_two_ranks_stop_together_on_sigterm_and_resume_to_the_same_weights(
    corpus: Corpus, tmp_path: Path
) -> None:
    index = corpus.subset(8, validation=True)
    settings = {"epochs": 2, "batch_seconds": 5.0, "early_stopping_patience": 5, "ema_decay": 0.9}

    def run_on_two_ranks(name: str, sigterm_at: int = 0) -> TrainingConfig:
        config = training_config(tmp_path / name, **settings)
        job = DDPJob(2, free_port(), corpus, config, index, str(tmp_path / name), sigterm_at)
        torch.multiprocessing.spawn(_ddp_worker, args=(job,), nprocs=2, join=True)
        return config

    # one process with the global batch plans the same batches as two ranks of half of it
    single = make_trainer(corpus, TINY_MODEL, training_config(tmp_path, batch_seconds=10.0), index)
    steps = len(single.epoch_batches[0])
    assert steps >= 2
    run_on_two_ranks("whole")
    cut = run_on_two_ranks("cut", sigterm_at=steps + 1)  # the first step of epoch 2, rank 0 only
    # both ranks stopped at the same step (rank 1 never got the signal), rank 0 saved it
    assert {p.name for p in (tmp_path / "cut").glob("rank*")} == {
        "rank0.preempted",
        "rank1.preempted",
    }
    saved = load_checkpoint(cut)
    assert (saved["epoch"], saved["steps_in_epoch"], saved["complete"]) == (0, 1, False)
    run_on_two_ranks("cut")  # the same command again: resumes
    whole = torch.load(tmp_path / "whole" / "rank0.pt", weights_only=True)
    resumed = torch.load(tmp_path / "cut" / "rank0.pt", weights_only=True)
    for name, weight in whole.items():
        torch.testing.assert_close(resumed[name], weight, msg=name)
