"""Feature extraction on the real LibriSpeech sample: transform, audio formats, pipeline, cache.

Everything runs on the shared sample (skipped with a reason when it is absent); derived audio (WAV
copies, resampled, stereo, corrupt files) and feature stores are written under pytest's tmp dirs.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from asr_pipeline.audio.computed import ComputedFeatures
from asr_pipeline.audio.extraction import ExtractionPlan, compute_features
from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor, NormalisationStats
from asr_pipeline.audio.loading import load_audio
from asr_pipeline.audio.shards import ShardedFeatures
from asr_pipeline.datasets.feature_store import FeatureStoreDataset
from asr_pipeline.pipelines.data_engineering.nodes import (
    scan_librispeech,
    split_by_speaker,
    validate_utterances,
)
from asr_pipeline.pipelines.feature_engineering.nodes import (
    add_speed_variants,
    assign_feature_keys,
    compute_normalisation_stats,
    extract_features,
    index_features,
)
from asr_pipeline.trainer.augment import SpecAugment
from tests.support import project_params

NODES_LOGGER = "asr_pipeline.pipelines.feature_engineering.nodes"


def feature_params(**overrides: Any) -> dict[str, Any]:
    """The project's default ``features`` parameters, with ``overrides``."""
    return {**project_params("feature_engineering")["features"], **overrides}


def mel_filters(extractor: FeatureExtractor) -> torch.Tensor:
    """The ``(n_freqs, n_mels)`` mel filterbank inside a log-mel or MFCC extractor."""
    if extractor.config.kind == "mfcc":
        return extractor.transform.MelSpectrogram.mel_scale.fb
    return extractor.transform.mel_scale.fb


def run_extraction(
    keyed: pd.DataFrame, store_dir: Path, params: dict[str, Any]
) -> tuple[ExtractionPlan, ShardedFeatures]:
    """Run ``extract_features`` as Kedro does: read the cache, save the returned plan (the store's
    workers carry it out), reload; the plan is kept for the checks."""
    dataset = FeatureStoreDataset(str(store_dir))
    plan = extract_features(keyed, dataset.load(), params)
    dataset.save(plan)
    return plan, dataset.load()


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.rglob("*.safetensors")}


@pytest.fixture(scope="module")
def flac_files(librispeech_root: Path) -> list[Path]:
    files = sorted((librispeech_root / "train-clean-100").glob("*/*/*.flac"))
    assert len(files) >= 5, f"too few FLAC files in {librispeech_root / 'train-clean-100'}"
    return files


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(FeatureConfig.from_params(feature_params()))


# --- the transform ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["log_mel", "mfcc"])
def test_extractor_shapes_dtype_and_determinism(kind: str, flac_files: list[Path]) -> None:
    config = FeatureConfig.from_params(feature_params(kind=kind))
    extractor = FeatureExtractor(config)
    path = flac_files[1]
    signal = load_audio(path, config.sample_rate)
    raw = extractor(signal)
    expected = (config.n_features, len(signal) // config.hop_length + 1)
    assert tuple(raw.shape) == expected
    assert config.num_frames(len(signal)) == expected[1]
    assert config.n_features == (40 if kind == "mfcc" else 80)
    assert torch.isfinite(raw).all()

    first = compute_features(str(path), extractor)
    second = compute_features(str(path), FeatureExtractor(config))
    assert first.dtype == torch.float16
    assert tuple(first.shape) == expected
    assert torch.equal(first, second), "feature extraction is not deterministic"
    assert torch.isfinite(first).all(), "float16 features overflowed"
    # float16 only rounds: it must agree with the float32 computation to float16 precision
    torch.testing.assert_close(first.float(), raw, atol=2e-2, rtol=2e-3)


def test_num_frames_matches_for_many_lengths(extractor: FeatureExtractor) -> None:
    config = extractor.config
    for num_samples in (400, 401, 1599, 1600, 1601, 16000, 16159, 16160):
        features = extractor(torch.randn(num_samples))
        assert features.shape == (config.n_features, config.num_frames(num_samples))


@pytest.mark.parametrize("kind", ["log_mel", "mfcc"])
def test_default_config_has_no_empty_mel_filters(kind: str) -> None:
    config = FeatureConfig.from_params(feature_params(kind=kind))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchaudio's "all zero values" UserWarning would raise
        extractor = FeatureExtractor(config)
    filters = mel_filters(extractor)
    assert filters.shape == (config.n_fft // 2 + 1, config.n_mels)
    sums = filters.sum(dim=0)
    assert (sums > 0).all(), f"empty mel filters: {torch.nonzero(sums <= 0).flatten().tolist()}"


def test_too_many_mels_warns_about_empty_filters() -> None:
    """The check above can fail: 128 mels on a 400-point FFT leave filters empty."""
    with pytest.warns(UserWarning, match="all zero values"):
        FeatureExtractor(FeatureConfig.from_params(feature_params(n_mels=128)))


# --- audio formats ----------------------------------------------------------------------------


def test_flac_and_16bit_wav_give_the_same_features(
    flac_files: list[Path], extractor: FeatureExtractor, tmp_path: Path
) -> None:
    flac = flac_files[2]
    samples, rate = sf.read(flac, dtype="int16")
    wav = tmp_path / f"{flac.stem}.wav"
    sf.write(wav, samples, rate, subtype="PCM_16")
    assert sf.info(wav).subtype == "PCM_16"
    from_flac = compute_features(str(flac), extractor)
    from_wav = compute_features(str(wav), extractor)
    assert from_flac.shape == from_wav.shape
    assert (from_flac.float() - from_wav.float()).abs().max() <= 1e-3


def _low_band(extractor: FeatureExtractor, max_hz: float) -> torch.Tensor:
    """Mel bins whose filters lie entirely below ``max_hz``."""
    filters = mel_filters(extractor)
    freqs = torch.linspace(0, extractor.config.sample_rate / 2, filters.shape[0])
    top = torch.stack([freqs[filters[:, j] > 0].max() for j in range(filters.shape[1])])
    return top < max_hz


@pytest.mark.parametrize("rate,channels", [(8000, 1), (44100, 2)])
def test_other_rates_and_stereo_are_converted(
    rate: int, channels: int, flac_files: list[Path], extractor: FeatureExtractor, tmp_path: Path
) -> None:
    config = extractor.config
    flac = flac_files[3]
    samples, original_rate = sf.read(flac, dtype="float32")
    assert original_rate == config.sample_rate
    original = load_audio(flac, config.sample_rate)
    converted = AF.resample(torch.from_numpy(samples), original_rate, rate)
    if channels == 2:
        # unequal channels whose average is the original: downmixing must average, not pick one
        converted = torch.stack([1.25 * converted, 0.75 * converted], dim=1)
    assert converted.abs().max() < 1.0
    path = tmp_path / f"{flac.stem}-{rate}-{channels}ch.flac"
    sf.write(path, converted.numpy(), rate, subtype="PCM_16")
    assert (sf.info(path).samplerate, sf.info(path).channels) == (rate, channels)

    signal = load_audio(path, config.sample_rate)
    assert signal.dim() == 1 and signal.dtype == torch.float32
    assert abs(len(signal) - len(original)) <= 0.01 * len(original)

    reference = compute_features(str(flac), extractor).float()
    features = compute_features(str(path), extractor).float()
    assert features.shape[0] == config.n_features
    assert abs(features.shape[1] - reference.shape[1]) <= 0.01 * reference.shape[1]
    frames = min(features.shape[1], reference.shape[1])
    # 8 kHz audio has nothing above 4 kHz: compare the bins below 3.5 kHz (56 of 80)
    bins = _low_band(extractor, 3500) if rate < config.sample_rate else slice(None)
    difference = (features[bins, :frames] - reference[bins, :frames]).abs().mean()
    spread = reference[bins].std()
    # measured on this sample: ~0.006 (8 kHz, low band) and ~0.02 (44.1 kHz stereo, 16-bit)
    assert difference < 0.05 * spread, f"{difference:.3f} vs spread {spread:.3f}"


# --- the feature_engineering pipeline on a small real subset -----------------------------------


@dataclass
class PipelineRun:
    manifest: pd.DataFrame
    params: dict[str, Any]
    keyed: pd.DataFrame
    store_dir: Path
    plan: ExtractionPlan
    store: ShardedFeatures
    index: pd.DataFrame
    stats: dict[str, Any]
    mtimes: dict[str, int]


@pytest.fixture(scope="module")
def data_params() -> dict[str, Any]:
    return {
        **project_params("data_engineering")["data_engineering"],
        **project_params("data_engineering", env="shared")["data_engineering"],
        "train_subsets": ["train-clean-100"],
        "test_subsets": ["dev-clean-2"],
        "max_utterances_per_speaker": 3,
    }


@pytest.fixture(scope="module")
def small_manifest(librispeech_root: Path, data_params: dict[str, Any]) -> pd.DataFrame:
    inventory = scan_librispeech(str(librispeech_root), data_params)
    manifest, _ = validate_utterances(inventory, data_params)
    splits = split_by_speaker(manifest, data_params)
    assert set(splits.split) == {"train", "validation", "test"}
    assert len(splits) <= 3 * splits.speaker_id.nunique()
    return splits


@pytest.fixture(scope="module")
def pipeline_run(small_manifest: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    params = feature_params(workers=2, shard_mb=0.2)
    keyed = assign_feature_keys(small_manifest, params)
    store_dir = tmp_path_factory.mktemp("features") / "store"
    plan, store = run_extraction(keyed, store_dir, params)
    index = index_features(keyed, store, params)
    stats = compute_normalisation_stats(index, store, {**params, "normalisation": "global"})
    return PipelineRun(
        small_manifest, params, keyed, store_dir, plan, store, index, stats, mtimes(store_dir)
    )


def test_pipeline_extracts_every_utterance(pipeline_run: PipelineRun) -> None:
    run = pipeline_run
    config = FeatureConfig.from_params(run.params)
    assert run.keyed.feature_key.is_unique
    assert len(run.store) == len(run.keyed)
    assert len(run.plan.jobs) == len(run.keyed)
    assert len(mtimes(run.store_dir)) > 2  # several shards, written by two workers
    assert set(run.index.feature_key) == set(run.keyed.feature_key)
    assert len(run.index) == len(run.keyed)
    merged = run.index.merge(run.keyed[["feature_key", "num_samples"]], on="feature_key")
    originals = merged[merged.speed == 1.0]
    expected_frames = [config.num_frames(n) for n in originals.num_samples]
    assert originals.num_frames.tolist() == expected_frames
    for key in run.index.feature_key[:3]:
        tensor = run.store[key]
        assert tensor.dtype == torch.float16
        assert tensor.shape[0] == config.n_features


def test_normalisation_stats_come_from_the_training_split_only(pipeline_run: PipelineRun) -> None:
    run = pipeline_run

    def pooled(keys: pd.Series) -> torch.Tensor:
        return torch.cat([run.store[key].double() for key in keys], dim=1)

    original_train = (run.index.split == "train") & (run.index.speed == 1.0)
    train = pooled(run.index.loc[original_train, "feature_key"])
    everything = pooled(run.index.feature_key)
    mean = torch.tensor(run.stats["mean"], dtype=torch.float64)
    std = torch.tensor(run.stats["std"], dtype=torch.float64)
    assert run.stats["frames"] == train.shape[1]
    assert run.stats["frames"] == run.index.loc[original_train, "num_frames"].sum()
    torch.testing.assert_close(mean, train.mean(dim=1), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(std, train.std(dim=1, correction=0), atol=1e-3, rtol=1e-4)
    # the statistics over all splits are measurably different, so the check above means something
    assert (everything.mean(dim=1) - mean).abs().max() > 0.05
    assert (std > 0).all()


def test_utterance_mean_normalisation_removes_each_utterances_own_average(
    pipeline_run: PipelineRun,
) -> None:
    run = pipeline_run
    stats = NormalisationStats(
        **compute_normalisation_stats(
            run.index, run.store, {**run.params, "normalisation": "utterance_mean"}
        )
    )
    assert stats.utterance_mean
    original_train = (run.index.split == "train") & (run.index.speed == 1.0)
    centred = torch.cat(
        [
            run.store[key].double() - run.store[key].double().mean(dim=1, keepdim=True)
            for key in run.index.loc[original_train, "feature_key"]
        ],
        dim=1,
    )
    torch.testing.assert_close(
        torch.tensor(stats.std, dtype=torch.float64),
        centred.std(dim=1, correction=0),
        atol=1e-3,
        rtol=1e-4,
    )
    # a louder recording (a constant offset in log-mel) normalises to the very same features
    features = run.store[run.index.feature_key.iloc[0]].float()
    torch.testing.assert_close(stats.apply(features + 3.0), stats.apply(features))
    normalised = stats.apply(features)
    torch.testing.assert_close(
        normalised.mean(dim=1), torch.zeros(len(stats.mean)), atol=1e-4, rtol=0
    )
    # the global default keeps the offset, so the check above means something
    global_stats = NormalisationStats(**run.stats)
    assert not global_stats.utterance_mean
    assert not torch.allclose(global_stats.apply(features + 3.0), global_stats.apply(features))
    with pytest.raises(ValueError, match="normalisation"):
        compute_normalisation_stats(run.index, run.store, {**run.params, "normalisation": "cmvn"})


def test_training_utterances_get_speed_perturbed_features(pipeline_run: PipelineRun) -> None:
    run = pipeline_run
    speeds = sorted({1.0, *run.params["speed_perturbation"]})
    assert len(speeds) > 1, "the default configuration perturbs speed"
    by_utterance = run.index.groupby("utterance_id").speed.apply(sorted)
    splits = run.index.groupby("utterance_id").split.first()
    for utterance_id, utterance_speeds in by_utterance.items():
        expected = speeds if splits[utterance_id] == "train" else [1.0]
        assert utterance_speeds == expected, utterance_id
    original = run.index[(run.index.split == "train") & (run.index.speed == 1.0)].iloc[0]
    for speed in speeds:
        row = run.index[
            (run.index.utterance_id == original.utterance_id) & (run.index.speed == speed)
        ].iloc[0]
        # played `speed` times faster: 1/speed of the frames (the resampler rounds up)
        assert abs(row.num_frames - original.num_frames / speed) <= 2, (speed, row.num_frames)
        assert row.duration_s == pytest.approx(original.duration_s / speed)
        if speed != 1.0:
            assert row.feature_key != original.feature_key
            assert not torch.equal(
                run.store[row.feature_key][:, :50], run.store[original.feature_key][:, :50]
            )


def test_features_on_the_fly_are_the_cached_ones_without_a_store(
    pipeline_run: PipelineRun, tmp_path: Path
) -> None:
    run = pipeline_run
    params = {**run.params, "storage": "on_the_fly"}
    plan, store = run_extraction(run.keyed, tmp_path / "store", params)
    assert plan.jobs == () and len(store) == 0  # nothing extracted, nothing stored
    index = index_features(run.keyed, store, params)
    # every row (speed copies too), with the frames its features have, known without decoding
    pd.testing.assert_frame_equal(index, run.index)
    computed = ComputedFeatures(index, FeatureConfig.from_params(params))
    for key in index.feature_key[index.speed != 1.0][:2].tolist() + index.feature_key[:2].tolist():
        assert torch.equal(computed[key], run.store[key])
    stats = compute_normalisation_stats(index, store, {**params, "normalisation": "global"})
    assert stats == run.stats
    with pytest.raises(ValueError, match="storage"):
        index_features(run.keyed, store, {**params, "storage": "lazy"})


def test_speed_list_is_deduplicated_and_must_be_positive(small_manifest: pd.DataFrame) -> None:
    train = int((small_manifest.split == "train").sum())
    rows = add_speed_variants(small_manifest, [1.1, 1.1, 1.0, 0.9])
    assert len(rows) == len(small_manifest) + 2 * train
    assert sorted(rows.speed.unique()) == [0.9, 1.0, 1.1]
    for bad in ([0.0], [-0.9, 1.1]):
        with pytest.raises(ValueError, match="positive speeds"):
            add_speed_variants(small_manifest, bad)


def test_second_run_is_a_cache_hit(
    pipeline_run: PipelineRun, caplog: pytest.LogCaptureFixture
) -> None:
    run = pipeline_run
    before = mtimes(run.store_dir)
    assert before == run.mtimes
    with caplog.at_level(logging.INFO, logger=NODES_LOGGER):
        plan, store = run_extraction(
            assign_feature_keys(run.manifest, run.params), run.store_dir, run.params
        )
    assert plan.jobs == (), "a cached feature was computed again"
    total = len(run.keyed)
    assert f"{total} of {total} feature rows cached, computing 0" in caplog.text
    assert mtimes(run.store_dir) == before
    assert len(store) == total


def test_a_moved_project_and_corpus_extract_nothing_again(
    pipeline_run: PipelineRun, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the project (its feature store) and the audio both move: new paths, new modification times
    run = pipeline_run
    store_dir = tmp_path / "moved-project" / "store"
    shutil.copytree(run.store_dir, store_dir)
    audio_dir = tmp_path / "moved-corpus"
    audio_dir.mkdir()
    moved_paths = []
    for path in run.manifest.path:
        target = audio_dir / Path(path).name
        shutil.copy(path, target)  # copy, not copy2: the copy has a new mtime
        moved_paths.append(str(target))
    moved = run.manifest.assign(path=moved_paths)
    keyed = assign_feature_keys(moved, run.params)
    assert keyed.feature_key.tolist() == run.keyed.feature_key.tolist()
    with caplog.at_level(logging.INFO, logger=NODES_LOGGER):
        plan, _ = run_extraction(keyed, store_dir, run.params)
    total = len(keyed)
    assert f"{total} of {total} feature rows cached, computing 0" in caplog.text
    assert plan.jobs == ()
    # a file replaced by other audio is extracted again, alone
    first = Path(moved_paths[0])
    first.write_bytes(Path(moved_paths[1]).read_bytes())
    rekeyed = assign_feature_keys(moved, run.params)
    changed = rekeyed.feature_key != keyed.feature_key
    assert rekeyed.loc[changed, "path"].unique().tolist() == [str(first)]


def test_changing_a_feature_parameter_invalidates_every_key(
    pipeline_run: PipelineRun, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = pipeline_run
    store_dir = tmp_path / "store"
    shutil.copytree(run.store_dir, store_dir)
    params = {**run.params, "n_mels": 64}
    keyed = assign_feature_keys(run.manifest, params)
    assert not set(keyed.feature_key) & set(run.keyed.feature_key)
    # same utterance ids: only the parameter part of the key changed
    assert (keyed.utterance_id == run.keyed.utterance_id).all()
    before = mtimes(store_dir)
    with caplog.at_level(logging.INFO, logger=NODES_LOGGER):
        plan, store = run_extraction(keyed, store_dir, params)
    total = len(keyed)
    assert f"0 of {total} feature rows cached, computing {total}" in caplog.text
    assert len(plan.jobs) == total
    assert len(store) == 2 * total
    assert {name: t for name, t in mtimes(store_dir).items() if name in before} == before
    index = index_features(keyed, store, params)
    assert len(index) == total
    assert all(store[key].shape[0] == 64 for key in index.feature_key)


def test_corrupt_file_is_logged_and_left_out(
    pipeline_run: PipelineRun, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = pipeline_run
    good = run.manifest[run.manifest.split == "train"].head(4)
    source = Path(good.path.iloc[0])
    broken_dir = tmp_path / "audio"
    broken_dir.mkdir()
    truncated = broken_dir / "19-1-9998.flac"
    truncated.write_bytes(source.read_bytes()[:20000])
    garbage = broken_dir / "19-1-9999.flac"
    garbage.write_bytes(np.random.default_rng(0).bytes(30000))
    bad_rows = pd.DataFrame(
        [
            {**good.iloc[0].to_dict(), "utterance_id": path.stem, "path": str(path)}
            for path in (truncated, garbage)
        ]
    )
    # the broken files sit between good utterances, which keep their features
    manifest = pd.concat([good.iloc[:1], bad_rows, good.iloc[1:]], ignore_index=True)
    assert bad_rows.duration_s.gt(1).all()
    # one speed only: each broken file is then reported once
    params = {**run.params, "workers": 2, "speed_perturbation": []}
    keyed = assign_feature_keys(manifest, params)
    store_dir = tmp_path / "store"
    with caplog.at_level(logging.INFO, logger=NODES_LOGGER):
        _, store = run_extraction(keyed, store_dir, params)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    for path in (truncated, garbage):
        assert any(str(path) in message for message in errors), (path, errors)
    assert len(errors) == 2
    good_keys = set(keyed.feature_key[~keyed.utterance_id.isin(bad_rows.utterance_id)])
    assert set(store) == good_keys
    index = index_features(keyed, store, params)
    assert set(index.utterance_id) == set(good.utterance_id)
    assert not index.utterance_id.isin(bad_rows.utterance_id).any()


# --- the store --------------------------------------------------------------------------------


def test_feature_store_reads_headers_only_until_a_tensor_is_asked_for(
    pipeline_run: PipelineRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_dir = tmp_path / "store"
    shutil.copytree(pipeline_run.store_dir, store_dir)
    reads: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, size: int, offset: int) -> bytes:
        reads.append(size)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(os, "pread", counting_pread)
    store = FeatureStoreDataset(str(store_dir)).load()
    keys = sorted(pipeline_run.keyed.feature_key)
    assert len(store) == len(keys)
    assert list(store) == keys
    assert keys[0] in store and "not-a-key" not in store
    assert reads == []  # loading read the shards' headers, no tensor
    # a shard cut short after loading is not noticed until one of its tensors is read
    victim = store.shard_of(keys[0])
    victim.write_bytes(victim.read_bytes()[:100])
    other = next(key for key in keys if store.shard_of(key) != victim)

    tensor = store[other]
    assert reads == [tensor.numel() * tensor.element_size()]  # one read, of that tensor alone
    assert tensor.dtype == torch.float16
    assert tensor.shape[0] == FeatureConfig.from_params(pipeline_run.params).n_features
    assert torch.equal(tensor, pipeline_run.store[other])
    with pytest.raises(KeyError):
        store["not-a-key"]
    with pytest.raises(ValueError, match="truncated"):
        store[keys[0]]
    # loaded again, the broken shard is skipped: its keys are missing, to be extracted again
    reloaded = FeatureStoreDataset(str(store_dir)).load()
    assert keys[0] not in reloaded and other in reloaded
    assert FeatureStoreDataset(str(tmp_path / "missing")).load().keys() == set()


def test_saving_a_view_stores_only_its_own_values(tmp_path: Path) -> None:
    base = torch.arange(80 * 1000, dtype=torch.float16).reshape(80, 1000)
    view = base[:, 100:110]
    dataset = FeatureStoreDataset(str(tmp_path / "store"))
    dataset.save({"view": view, "whole": base})
    dataset.save({"view": torch.zeros(1, 1)})  # an existing key is never overwritten
    store = dataset.load()
    assert set(store) == {"view", "whole"}
    assert torch.equal(store["view"], view)
    assert store["view"].untyped_storage().nbytes() == view.numel() * view.element_size()
    assert not list((tmp_path / "store").rglob(".tmp-*")), "temporary files left behind"


# --- augmentation -----------------------------------------------------------------------------


def test_spec_augment_masks_and_keeps_shape() -> None:
    augment = SpecAugment(freq_mask=15, time_mask=30, n_freq_masks=2, n_time_masks=2)
    features = torch.rand(80, 200) + 1.0  # no zeros before masking
    masked = [augment(features, torch.Generator().manual_seed(seed)) for seed in range(20)]
    for one in masked:
        assert one.shape == features.shape
        kept = one != 0
        assert torch.equal(one[kept], features[kept]), "unmasked values must be unchanged"
        assert (~kept).float().mean() < 0.6
    assert sum(bool((one == 0).any()) for one in masked) >= 18, "masks are rarely empty"
    assert (features > 0).all(), "the input is not changed"
    # the generator decides: the same seed gives the same masks, another seed others
    again = augment(features, torch.Generator().manual_seed(0))
    assert torch.equal(again, masked[0]) and not torch.equal(masked[0], masked[1])


def test_spec_augment_time_masks_scale_with_the_utterance() -> None:
    augment = SpecAugment(
        freq_mask=0, time_mask=40, n_freq_masks=0, n_time_masks=6, max_time_ratio=0.05
    )
    masked_frames = {}
    for frames in (1000, 600, 100):
        features = torch.rand(8, frames) + 1.0
        total = 0.0
        for seed in range(100):
            masked = augment(features, torch.Generator().manual_seed(seed))
            time_masked = (masked == 0).all(dim=0)  # a whole frame zeroed
            runs = torch.diff(time_masked.int(), prepend=torch.tensor([0]))
            assert (runs == 1).sum() <= 6, "at most n_time_masks separate masks"
            total += time_masked.sum().item() / 100
        masked_frames[frames] = total
    # the 100-frame utterance gets masks of at most 5 frames (5% of it), the long one up to 40
    assert masked_frames[100] <= 6 * 5
    assert masked_frames[1000] > 2 * masked_frames[600] / 3 > masked_frames[100]
    with pytest.raises(ValueError, match="max_time_ratio"):
        SpecAugment(freq_mask=0, time_mask=40, n_freq_masks=0, n_time_masks=1, max_time_ratio=0)
