"""Nodes of the training pipeline."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from collections.abc import Mapping
from typing import Any

import matplotlib
import pandas as pd
import torch

from asr_pipeline.audio.computed import feature_source
from asr_pipeline.audio.features import FeatureConfig, NormalisationStats
from asr_pipeline.common.memory import peak_rss_mb
from asr_pipeline.model.bundle import make_bundle
from asr_pipeline.model.factory import AnyModelConfig, model_config_from_dict
from asr_pipeline.serving.pyfunc import SpeechRecognizerModel
from asr_pipeline.trainer.config import TrainingConfig
from asr_pipeline.trainer.loop import Trainer
from asr_pipeline.units.factory import units_from_dict

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

logger = logging.getLogger(__name__)


def resolve_model_config(
    params: Mapping[str, Any], feature_params: Mapping[str, Any], n_classes: int | None = None
) -> AnyModelConfig:
    """The preset named by ``training.preset``, with ``training.model`` overrides applied, and
    one class per token of the units (``n_classes``; None: ModelConfig's, the characters')."""
    presets = params["presets"]
    if params["preset"] not in presets:
        raise ValueError(f"unknown preset {params['preset']!r}; choose one of {sorted(presets)}")
    values = {**presets[params["preset"]], **(params.get("model") or {})}
    n_features = FeatureConfig.from_params(feature_params).n_features
    classes = {} if n_classes is None else {"n_classes": n_classes}
    return model_config_from_dict({**values, "n_features": n_features, **classes})


def train_acoustic_model(
    feature_index: pd.DataFrame,
    features: Mapping[str, torch.Tensor],
    normalisation_stats: dict[str, Any],
    output_units: dict[str, Any],
    params: dict[str, Any],
    feature_params: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, list[dict[str, float]]]]:
    """Train; return the best model as a bundle, the history table and MLflow metric histories.

    The model outputs ``output_units`` (one class per token); utterances they cannot encode
    are left out (counted in ``units_report``).
    """
    feature_config = FeatureConfig.from_params(feature_params)
    units = units_from_dict(output_units)
    model_config = resolve_model_config(params, feature_params, len(units.tokens))
    stats = NormalisationStats(**normalisation_stats)
    source = feature_source(feature_index, features, feature_config, feature_params["storage"])
    trainer = Trainer(
        model_config,
        TrainingConfig.from_params(params),
        feature_index,
        source,
        stats,
        frames_per_second=feature_config.sample_rate / feature_config.hop_length,
        units=units,
    )
    result = trainer.fit()
    info = {
        "preset": params["preset"],
        "best_epoch": result.best_epoch,
        "epochs_trained": len(result.history),
        f"best_{result.validation_metric.replace('val_', 'validation_')}": (
            result.best_validation_cer
        ),
        "units": units.kind,
        "excluded_utterances": result.excluded_utterances,
        "parameters": result.parameters,
        "train_seconds": result.train_seconds,
        "train_cpu_seconds": result.train_cpu_seconds,
        "audio_seconds_seen": result.audio_seconds_seen,
        "padding_fraction": result.padding_fraction,
    }
    bundle = make_bundle(model_config, result.state_dict, feature_config, stats, info, units)
    history = pd.DataFrame(result.history)
    metrics = {
        name: [
            {"value": float(v), "step": int(e)}
            for v, e in zip(history[name], history.epoch, strict=True)
        ]
        for name in history.columns
        if name != "epoch"
    }
    metrics["parameters"] = [{"value": float(result.parameters), "step": 0}]
    # the process's peak so far: training is the run's largest node (PeakMemoryHook logs each)
    metrics["peak_rss_mb"] = [{"value": peak_rss_mb(), "step": 0}]
    return bundle, history, metrics


def describe_training_run(
    feature_index: pd.DataFrame, feature_params: dict[str, Any]
) -> dict[str, str]:
    """Tags that say what a run trained on: git commit, manifest hash, feature parameters."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    manifest = feature_index[["utterance_id", "split", "feature_key"]].to_csv(index=False)
    return {
        "git_commit": commit,
        "manifest_sha1": hashlib.sha1(manifest.encode()).hexdigest(),
        "feature_params": json.dumps(feature_params, sort_keys=True),
        "train_utterances": str(
            feature_index.loc[feature_index.split == "train"].utterance_id.nunique()
        ),
    }


def plot_training_curves(history: pd.DataFrame) -> plt.Figure:
    """Loss and validation error rates per epoch (with an EMA, also those of the raw weights):
    CER and WER, or a phone model's PER."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    left.plot(history.epoch, history.train_loss, marker="o", label="train")
    left.plot(history.epoch, history.val_loss, marker="o", label="validation")
    left.set(xlabel="epoch", ylabel="CTC loss", title="Loss")
    left.legend()
    metrics = [m for m in ("cer", "wer", "per") if f"val_{m}" in history]
    averaged = f"val_{metrics[0]}_raw" in history  # validated: the average; dashed: the weights
    suffix = " (average)" if averaged else ""
    for metric, colour in zip(metrics, ("C0", "C1", "C2"), strict=False):
        label = metric.upper()
        values = 100 * history[f"val_{metric}"]
        right.plot(history.epoch, values, marker="o", color=colour, label=label + suffix)
        if averaged:
            raw = 100 * history[f"val_{metric}_raw"]
            right.plot(history.epoch, raw, "--", color=colour, label=f"{label} (trained weights)")
    right.set(xlabel="epoch", ylabel="%", title="Validation error (greedy)", ylim=(0, 105))
    right.legend()
    return figure


def package_recognizer(acoustic_model: dict[str, Any]) -> SpeechRecognizerModel:
    """The pyfunc that ``registered_model`` logs and registers (its weights: the saved bundle
    file, an artifact named in the catalog)."""
    info = acoustic_model["info"]
    metric = "per" if "best_validation_per" in info else "cer"
    logger.info(
        "Registering the recognizer (%s units, best epoch %s, validation %s %.1f%%)",
        info.get("units", "characters"),
        info["best_epoch"],
        metric.upper(),
        100 * info[f"best_validation_{metric}"],
    )
    return SpeechRecognizerModel()
