"""Nodes of the data_engineering pipeline."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asr_pipeline.common.settings import check_settings
from asr_pipeline.corpus import librispeech
from asr_pipeline.corpus.download import ensure_subsets
from asr_pipeline.corpus.remote import is_remote, mirror_subsets
from asr_pipeline.units.characters import normalise

logger = logging.getLogger(__name__)

QUALITY_COLUMNS = ["subset", "utterance_id", "speaker_id", "path", "issue", "severity", "detail"]
SPLITS = ("train", "validation", "test")
# The ``data_engineering`` parameters (parameters_data_engineering.yml), all required; any other key
# is refused, so that a misspelt setting fails the run instead of being ignored. The first node
# (prepare_librispeech) checks them, and the ``librispeech`` parameters, once for the pipeline.
DATA_ENGINEERING_SETTINGS = frozenset(
    {
        "train_subsets",
        "test_subsets",
        "shared_subset_test_fraction",
        "validation_fraction",
        "split_seed",
        "min_duration_s",
        "max_duration_s",
        "expected_sample_rate",
        "audio_extensions",
        "strict",
        "max_utterances_per_speaker",
        "exclude_speakers",
    }
)


def _configured_subsets(params: dict[str, Any]) -> list[str]:
    """Training and test subsets, each once, in order."""
    return list(dict.fromkeys(params["train_subsets"] + params["test_subsets"]))


def prepare_librispeech(librispeech_params: dict[str, Any], params: dict[str, Any]) -> str:
    """Check that every configured subset is there, downloading it when allowed; return the root.

    A root given as an fsspec URL (object storage) is mirrored to local disk first. The first node
    to read ``librispeech`` and ``data_engineering``: both are checked here.
    """
    check_settings(
        "librispeech",
        librispeech_params,
        librispeech.LIBRISPEECH_SETTINGS,
        librispeech.LIBRISPEECH_REQUIRED,
    )
    check_settings(
        "data_engineering", params, DATA_ENGINEERING_SETTINGS, required=DATA_ENGINEERING_SETTINGS
    )
    subsets = _configured_subsets(params)
    setting = str(librispeech_params["root"])
    if is_remote(setting):
        return str(mirror_subsets(setting, subsets, librispeech_params["mirror_dir"]).resolve())
    root = Path(setting).expanduser().resolve()
    downloaded = ensure_subsets(
        root,
        subsets,
        download=bool(librispeech_params.get("download", False)),
        base_url=librispeech_params["base_url"],
    )
    if downloaded:
        logger.info("Downloaded %s into %s", ", ".join(downloaded), root)
    return str(root)


def scan_librispeech(root: str, params: dict[str, Any]) -> pd.DataFrame:
    """One row per utterance found (transcript line, audio file, or both), with audio headers."""
    subsets = _configured_subsets(params)
    items = librispeech.scan(Path(root), subsets, params["audio_extensions"])
    inventory = pd.DataFrame([asdict(item) for item in items])
    logger.info("Scanned %d utterances in %s (%s)", len(inventory), root, ", ".join(subsets))
    return inventory


def _issue(row: Any, issue: str, severity: str, detail: str) -> dict[str, Any]:
    return {
        "subset": row.subset,
        "utterance_id": row.utterance_id,
        "speaker_id": row.speaker_id,
        "path": row.path,
        "issue": issue,
        "severity": severity,
        "detail": detail,
    }


def validate_utterances(
    inventory: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalise transcripts and sort out what cannot be trained on.

    Errors exclude the utterance (no audio, no transcript, unreadable/truncated/empty audio, nothing
    left after normalisation, duration out of bounds); warnings keep it (other sample rates and
    multi-channel audio are converted by the features; unknown characters are reported and dropped).
    """
    expected_rate = int(params["expected_sample_rate"])
    rows, issues = [], []
    for row in inventory.itertuples(index=False):
        problems: list[tuple[str, str, str]] = []
        if row.path is None or pd.isna(row.path):
            problems.append(("missing_audio", "error", "transcript line without an audio file"))
        elif row.audio_issue:  # an AudioIssue code from the scan: empty/unreadable/truncated
            problems.append((row.audio_issue, "error", row.audio_error))
        text, unknown = ("", [])
        if row.transcript is None or pd.isna(row.transcript):
            problems.append(("missing_transcript", "error", "audio file without a transcript line"))
        else:
            text, unknown = normalise(row.transcript)
            if unknown:
                problems.append(("oov_characters", "warning", "dropped " + "".join(unknown)))
            if not text:
                problems.append(("empty_transcript", "error", "nothing left after normalisation"))
        duration = row.num_samples / row.sample_rate if row.sample_rate else 0.0
        if not row.audio_issue and row.sample_rate:
            if row.sample_rate != expected_rate:
                problems.append(("sample_rate", "warning", f"{row.sample_rate} Hz, resampled"))
            if row.channels != 1:
                problems.append(("multi_channel", "warning", f"{row.channels} channels, downmixed"))
            if duration < params["min_duration_s"]:
                problems.append(("too_short", "error", f"{duration:.2f} s"))
            elif duration > params["max_duration_s"]:
                problems.append(("too_long", "error", f"{duration:.2f} s"))
        issues.extend(_issue(row, *problem) for problem in problems)
        if any(severity == "error" for _, severity, _ in problems):
            continue
        rows.append(
            {
                "utterance_id": row.utterance_id,
                "subset": row.subset,
                "speaker_id": int(row.speaker_id),
                "chapter_id": int(row.chapter_id),
                "path": row.path,
                "transcript": row.transcript,
                "text": text,
                "oov_characters": "".join(unknown),
                "sample_rate": int(row.sample_rate),
                "channels": int(row.channels),
                "num_samples": int(row.num_samples),
                "duration_s": duration,
                "format": row.audio_format,
            }
        )
    manifest = pd.DataFrame(rows)
    report = pd.DataFrame(issues, columns=QUALITY_COLUMNS)
    _log_report(report, len(inventory), len(manifest))
    errors = report[report.severity == "error"]
    if params.get("strict") and len(report):
        raise ValueError(
            f"strict mode: {len(report)} data-quality issue(s), e.g. "
            f"{report.iloc[0].utterance_id}: {report.iloc[0].issue} ({report.iloc[0].detail}). "
            "See the data_quality_report, or set data_engineering.strict: false to exclude them."
        )
    if manifest.empty:
        raise ValueError(
            f"no usable utterance among {len(inventory)} scanned ({len(errors)} excluded): "
            "check librispeech.root and data_engineering subsets"
        )
    return manifest, report


def _log_report(report: pd.DataFrame, scanned: int, kept: int) -> None:
    logger.info("Manifest: %d of %d utterances usable", kept, scanned)
    for (issue, severity), count in report.groupby(["issue", "severity"]).size().items():
        logger.warning("Data quality: %d x %s (%s)", count, issue, severity)


def _pick_speakers(speakers: list[int], fraction: float, rng: np.random.Generator) -> set[int]:
    """A random ``fraction`` of ``speakers`` (at least one when the fraction is positive)."""
    if fraction <= 0 or not speakers:
        return set()
    count = min(len(speakers) - 1, max(1, round(fraction * len(speakers))))
    return set(rng.permutation(sorted(speakers))[:count].tolist())


def split_by_speaker(manifest: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Assign ``train`` / ``validation`` / ``test`` by whole speakers.

    Test subsets give test speakers; a subset that is also a training subset gives
    ``shared_subset_test_fraction`` of its speakers to test and the rest to training. A speaker who
    is in test anywhere never trains. Validation speakers are drawn from the training speakers.
    """
    rng = np.random.default_rng(params["split_seed"])
    excluded = set(params.get("exclude_speakers") or [])
    if excluded:
        # e.g. speakers of a separate evaluation set: they must never be trained on
        before = len(manifest)
        manifest = manifest[~manifest.speaker_id.isin(excluded)]
        logger.info(
            "Excluded %d utterances of %d listed speakers", before - len(manifest), len(excluded)
        )
    train_subsets, test_subsets = set(params["train_subsets"]), set(params["test_subsets"])
    test_speakers: set[int] = set()
    for subset in sorted(test_subsets):
        speakers = sorted(manifest.loc[manifest.subset == subset, "speaker_id"].unique().tolist())
        if subset in train_subsets:
            test_speakers |= _pick_speakers(speakers, params["shared_subset_test_fraction"], rng)
        else:
            test_speakers |= set(speakers)
    in_train_subset = manifest.subset.isin(train_subsets)
    train_pool = sorted(set(manifest.loc[in_train_subset, "speaker_id"]) - test_speakers)
    validation_speakers = _pick_speakers(train_pool, params["validation_fraction"], rng)

    split = pd.Series("", index=manifest.index)
    split[manifest.speaker_id.isin(test_speakers)] = "test"
    split[(split == "") & in_train_subset & manifest.speaker_id.isin(validation_speakers)] = (
        "validation"
    )
    split[(split == "") & in_train_subset] = "train"
    splits = manifest.assign(split=split)
    dropped = splits[splits.split == ""]
    if len(dropped):
        logger.info(
            "%d utterances of test speakers are outside the test subsets: unused", len(dropped)
        )
    splits = splits[splits.split != ""].reset_index(drop=True)
    if params.get("max_utterances_per_speaker"):
        # Small, still speaker-disjoint subsets for smoke runs and tests.
        splits = (
            splits.sort_values("utterance_id")
            .groupby("speaker_id", group_keys=False)
            .head(int(params["max_utterances_per_speaker"]))
            .reset_index(drop=True)
        )
    check_speaker_disjoint(splits)
    for name in SPLITS:
        part = splits[splits.split == name]
        logger.info(
            "Split %-10s %5d utterances, %3d speakers, %6.2f h",
            name,
            len(part),
            part.speaker_id.nunique(),
            part.duration_s.sum() / 3600,
        )
    if not (splits.split == "train").any():
        # Not an error here: evaluating a registered model needs test speakers only. Training
        # checks for itself (require_training_split), where it starts.
        logger.info("No training split: enough to evaluate a model, not to train one")
    return splits


def require_training_split(manifest_splits: pd.DataFrame, step: str) -> None:
    """Refuse to start ``step`` of training without training utterances, saying what to change.

    Called by the first nodes that read the training split (feature keys, output units), so that
    a run of the training pipelines fails before any work, while data_engineering alone (e.g.
    followed by evaluation of a registered model) accepts test subsets only.
    """
    if not (manifest_splits.split == "train").any():
        raise ValueError(
            f"{step}: the training split is empty. Training needs data_engineering.train_subsets "
            "(speakers not held out for test); to evaluate a registered model on test subsets "
            "alone, run --pipelines data_engineering,evaluation with model_uri=models:/NAME@ALIAS"
        )


def check_speaker_disjoint(splits: pd.DataFrame) -> None:
    """Raise when a speaker appears in more than one split."""
    per_speaker = splits.groupby("speaker_id").split.nunique()
    shared = per_speaker[per_speaker > 1].index.tolist()
    if shared:
        raise ValueError(f"speakers {shared} appear in more than one split")
