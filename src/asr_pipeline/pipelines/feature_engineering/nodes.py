"""Nodes of the feature_engineering pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import torch

from asr_pipeline.audio.computed import computed_on_the_fly, expected_frames, feature_source
from asr_pipeline.audio.extraction import ExtractionJob, ExtractionPlan, cache_key
from asr_pipeline.audio.features import FeatureConfig, FeatureExtractor, RunningStats
from asr_pipeline.audio.loading import load_audio
from asr_pipeline.audio.shards import ShardedFeatures, utterance_sums
from asr_pipeline.common.progress import progress_bar
from asr_pipeline.pipelines.data_engineering.nodes import require_training_split

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

logger = logging.getLogger(__name__)


def add_speed_variants(manifest_splits: pd.DataFrame, speeds: list[float]) -> pd.DataFrame:
    """The manifest with a ``speed`` column: 1.0 for every utterance, plus one row per extra speed
    for each training utterance (training draws one of them per epoch; nothing else sees them)."""
    extra = sorted({float(speed) for speed in speeds} - {1.0})
    if any(speed <= 0 for speed in extra):
        raise ValueError(f"features.speed_perturbation must be positive speeds, got {speeds}")
    original = manifest_splits.assign(speed=1.0)
    if not extra:
        return original
    train = original[original.split == "train"]
    variants = [train.assign(speed=speed, duration_s=train.duration_s / speed) for speed in extra]
    return pd.concat([original, *variants], ignore_index=True)


def assign_feature_keys(manifest_splits: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """The manifest with the cache key of each utterance's features under these parameters.

    With ``speed_perturbation`` the training utterances also get rows for their faster and slower
    versions. The first node of feature_engineering, which exists for training only: it refuses a
    manifest without a training split before any feature is computed.
    """
    require_training_split(manifest_splits, "feature_engineering")
    config = FeatureConfig.from_params(params)
    keyed = add_speed_variants(manifest_splits, params["speed_perturbation"] or [])
    keys = [
        cache_key(row.utterance_id, row.path, config, row.speed)
        for row in keyed.itertuples(index=False)
    ]
    return keyed.assign(feature_key=keys)


def extract_features(
    keyed_manifest: pd.DataFrame, feature_cache: Mapping[str, torch.Tensor], params: dict[str, Any]
) -> ExtractionPlan:
    """What the store lacks, as a plan the feature store carries out when Kedro saves it: its
    worker processes compute the features and write them, a shard at a time, so a long extraction
    is one save (one log line), memory stays flat, and a crash keeps the shards already written.
    A file that fails to decode is logged with its path and left out; the index step reports it.
    """
    config = FeatureConfig.from_params(params)
    if computed_on_the_fly(params["storage"]):
        logger.info("Features: computed on the fly by training (features.storage), none stored")
        todo = keyed_manifest.iloc[:0]
    else:
        todo = keyed_manifest[~keyed_manifest.feature_key.isin(list(feature_cache.keys()))]
        logger.info(
            "Features: %d of %d feature rows cached, computing %d (%.2f h of audio)",
            len(keyed_manifest) - len(todo),
            len(keyed_manifest),
            len(todo),
            todo.duration_s.sum() / 3600,
        )
    jobs = tuple(
        ExtractionJob(row.feature_key, row.path, row.duration_s, row.speed)
        for row in todo.itertuples(index=False)
    )
    return ExtractionPlan(jobs, config, params["workers"], params["shard_mb"])


def index_features(
    keyed_manifest: pd.DataFrame, features: Mapping[str, torch.Tensor], params: dict[str, Any]
) -> pd.DataFrame:
    """Utterances whose features exist, with their number of frames (what training batches by).

    Features computed on the fly exist for every usable utterance; their frames follow from the
    audio's length (:func:`asr_pipeline.audio.computed.expected_frames`).
    """
    if computed_on_the_fly(params["storage"]):
        config = FeatureConfig.from_params(params)
        index = keyed_manifest.reset_index(drop=True)
        frames = [
            expected_frames(row.num_samples, row.sample_rate, config, row.speed)
            for row in index.itertuples(index=False)
        ]
    else:
        present = keyed_manifest.feature_key.isin(list(features.keys()))
        for row in keyed_manifest[~present].itertuples(index=False):
            logger.warning("No features for %s (%s): left out", row.utterance_id, row.path)
        index = keyed_manifest[present].reset_index(drop=True)
        frames = _frames_of(features, index.feature_key.tolist())
    columns = [
        "utterance_id",
        "split",
        "subset",
        "speaker_id",
        "duration_s",
        "speed",
        "text",
        "feature_key",
        "path",
    ]
    return index[columns].assign(num_frames=frames)


def compute_normalisation_stats(
    feature_index: pd.DataFrame, features: Mapping[str, torch.Tensor], params: dict[str, Any]
) -> dict[str, Any]:
    """Per-coefficient mean and standard deviation over the training split only (original speed:
    what the model will be given at test time); with ``normalisation: utterance_mean`` they are
    taken after each utterance's own mean is removed, as the model will see it."""
    kind = params["normalisation"]
    if kind not in ("global", "utterance_mean"):
        raise ValueError(f"features.normalisation must be global or utterance_mean, got {kind!r}")
    utterance_mean = kind == "utterance_mean"
    originals = (feature_index.split == "train") & (feature_index.speed == 1.0)
    train_keys = feature_index.loc[originals, "feature_key"]
    if train_keys.empty:
        raise ValueError("no training utterances with features: cannot compute normalisation stats")
    source = feature_source(
        feature_index, features, FeatureConfig.from_params(params), params["storage"]
    )
    sums, squares, frames = _sums_of(source, train_keys.tolist())
    stats = RunningStats(sums.shape[1])
    stats.add_sums(sums, squares, frames, centred=utterance_mean)
    return stats.result(utterance_mean).to_dict()


def _frames_of(features: Mapping[str, torch.Tensor], keys: list[str]) -> list[int]:
    """Frames of each key's features: from the shards' headers, or else from the tensors."""
    if isinstance(features, ShardedFeatures):
        return features.num_frames(keys).tolist()
    return [features[key].shape[-1] for key in keys]


def _sums_of(
    features: Mapping[str, torch.Tensor], keys: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-utterance sums, sums of squares and frames of ``keys``: the ones the shards keep
    (written while extracting), or else taken from the tensors (features computed on the fly)."""
    if isinstance(features, ShardedFeatures):
        return features.sums(keys)
    taken = [
        (*utterance_sums(features[key]), features[key].shape[-1])
        for key in progress_bar(keys, desc="normalisation", unit="utt", leave=False)
    ]
    sums, squares, frames = zip(*taken, strict=True)
    return np.stack(sums), np.stack(squares), np.asarray(frames)


def plot_feature_example(
    feature_index: pd.DataFrame, manifest_splits: pd.DataFrame, params: dict[str, Any]
) -> plt.Figure:
    """Waveform and features of the first training utterance: what the model sees."""
    feature_index = feature_index[feature_index.speed == 1.0]
    row = manifest_splits.set_index("utterance_id").loc[feature_index.utterance_id.iloc[0]]
    config = FeatureConfig.from_params(params)
    signal = load_audio(row.path, config.sample_rate)
    features = FeatureExtractor(config)(signal).numpy()  # matplotlib wants arrays, not tensors
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5), constrained_layout=True)
    seconds = torch.arange(len(signal)) / config.sample_rate
    top.plot(seconds.numpy(), signal.numpy(), linewidth=0.4)
    top.set(
        xlim=(0, float(seconds[-1])),
        xlabel="seconds",
        ylabel="amplitude",
        title=f"{feature_index.utterance_id.iloc[0]}: {row.text[:90]}",
    )
    bottom.imshow(
        features,
        origin="lower",
        aspect="auto",
        extent=(0, float(seconds[-1]), 0, features.shape[0]),
    )
    bottom.set(
        xlabel="seconds",
        ylabel=config.kind,
        title=f"{config.kind} ({features.shape[0]} x {features.shape[1]})",
    )
    return figure
