"""Tests for the data_engineering pipeline on the shared LibriSpeech sample.

Bad input (truncated, empty, missing, resampled, stereo, out-of-vocabulary) is made at test time
in a temporary copy of a LibriSpeech layout; the shared folder itself is only ever read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
import yaml

from asr_pipeline.corpus.download import DownloadError
from asr_pipeline.corpus.librispeech import AudioIssue, check_audio
from asr_pipeline.pipelines.data_engineering.nodes import (
    QUALITY_COLUMNS,
    check_speaker_disjoint,
    prepare_librispeech,
    scan_librispeech,
    split_by_speaker,
    validate_utterances,
)
from asr_pipeline.units.characters import CHARACTERS
from tests.support import project_params

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_PARAMS = PROJECT_ROOT / "conf" / "shared" / "parameters_data_engineering.yml"
MANIFEST_COLUMNS = {
    "utterance_id",
    "subset",
    "speaker_id",
    "chapter_id",
    "path",
    "transcript",
    "text",
    "sample_rate",
    "channels",
    "num_samples",
    "duration_s",
}
# speaker 19, first chapter of train-clean-100 in the shared sample
CHAPTER = ("train-clean-100", "19", "198")


def shared_params(**overrides: Any) -> dict[str, Any]:
    """The data_engineering parameters of ``--env shared`` (a fresh copy), with ``overrides``.

    conf/shared holds only what differs from conf/base; Kedro merges it over base (settings.py).
    """
    base = project_params("data_engineering")["data_engineering"]
    shared = yaml.safe_load(SHARED_PARAMS.read_text())["data_engineering"]
    return {**base, **shared, **overrides}


def copy_tree(source: Path, target: Path) -> None:
    """Copy files only (not permissions: the shared sample is read-only)."""
    for item in sorted(source.rglob("*")):
        destination = target / item.relative_to(source)
        if item.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item, destination)


def pairs(frame: pd.DataFrame) -> set[tuple[str, str, str]]:
    return set(zip(frame.utterance_id, frame.issue, frame.severity, strict=True))


# 1. Manifest of the shared folder ---------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_manifest(librispeech_root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    params = shared_params(test_subsets=["dev-clean", "dev-clean-2"])
    inventory = scan_librispeech(str(librispeech_root), params)
    manifest, report = validate_utterances(inventory, params)
    return inventory, manifest, report


def test_shared_manifest_counts_and_duration(shared_manifest: tuple) -> None:
    inventory, manifest, _ = shared_manifest
    assert inventory.groupby("subset").size().to_dict() == {
        "train-clean-100": 367,
        "dev-clean": 868,
        "dev-clean-2": 10,
    }
    assert manifest.groupby("subset").size().to_dict() == {
        "train-clean-100": 367,
        "dev-clean": 868,
        "dev-clean-2": 10,
    }
    train = manifest[manifest.subset == "train-clean-100"]
    assert train.duration_s.sum() == pytest.approx(4212.0, rel=0.01)
    assert sorted(train.speaker_id.unique()) == [19, 26, 27]
    assert manifest[manifest.subset == "dev-clean"].speaker_id.nunique() == 14
    assert sorted(manifest[manifest.subset == "dev-clean-2"].speaker_id.unique()) == [
        1988,
        2412,
        3752,
    ]
    assert manifest.utterance_id.is_unique is False  # dev-clean-2 repeats dev-clean utterances
    assert not manifest.duplicated(["subset", "utterance_id"]).any()


def test_shared_manifest_columns_and_values(shared_manifest: tuple, librispeech_root: Path) -> None:
    _, manifest, _ = shared_manifest
    assert set(manifest.columns) >= MANIFEST_COLUMNS
    assert not manifest[sorted(MANIFEST_COLUMNS)].isna().any().any()
    allowed = set(CHARACTERS)
    assert all(set(text) <= allowed for text in manifest.text)
    assert (manifest.text.str.len() > 0).all()
    assert (manifest.text == manifest.text.str.strip()).all()
    assert not manifest.text.str.contains("  ").any()
    assert (manifest.text == manifest.transcript.str.lower()).all()  # LibriSpeech is clean
    assert set(manifest.sample_rate) == {16000}
    assert set(manifest.channels) == {1}
    assert manifest.duration_s.to_numpy() == pytest.approx(
        (manifest.num_samples / manifest.sample_rate).to_numpy()
    )
    assert manifest.duration_s.between(0.5, 35.0).all()
    root = librispeech_root.resolve()
    for row in manifest.sample(20, random_state=0).itertuples():
        path = Path(row.path)
        assert path.is_file()
        assert path.is_relative_to(root / row.subset / str(row.speaker_id) / str(row.chapter_id))
        assert path.stem == row.utterance_id
    assert set(manifest.loc[manifest.subset == "dev-clean", "path"].str[-4:]) == {".mp3"}
    assert set(manifest.loc[manifest.subset != "dev-clean", "path"].str[-5:]) == {".flac"}


def test_shared_data_has_no_quality_issues(shared_manifest: tuple) -> None:
    _, _, report = shared_manifest
    assert list(report.columns) == QUALITY_COLUMNS
    assert report.empty, report.to_string()


# 2. Speaker-disjoint splits ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def conf_manifest(shared_manifest: tuple) -> pd.DataFrame:
    """The manifest of exactly the subsets of conf/shared (train-clean-100 and dev-clean)."""
    _, manifest, _ = shared_manifest
    subsets = set(shared_params()["train_subsets"] + shared_params()["test_subsets"])
    return manifest[manifest.subset.isin(subsets)].reset_index(drop=True)


def speaker_splits(splits: pd.DataFrame) -> dict[int, str]:
    per_speaker = splits.groupby("speaker_id").split.unique()
    return {speaker: "/".join(sorted(values)) for speaker, values in per_speaker.items()}


def test_split_is_speaker_disjoint_and_covers_everything(conf_manifest: pd.DataFrame) -> None:
    splits = split_by_speaker(conf_manifest, shared_params())
    assert set(splits.split) == {"train", "validation", "test"}
    assert (splits.groupby("speaker_id").split.nunique() == 1).all()
    # Every utterance is kept (no test speaker appears outside dev-clean here).
    assert len(splits) == len(conf_manifest)
    assert set(splits.utterance_id) == set(conf_manifest.utterance_id)
    check_speaker_disjoint(splits)


def test_split_divides_dev_clean_speakers(conf_manifest: pd.DataFrame) -> None:
    splits = split_by_speaker(conf_manifest, shared_params())
    by_speaker = speaker_splits(splits)
    dev = splits[splits.subset == "dev-clean"]
    dev_speakers = set(dev.speaker_id)
    test_speakers = {s for s in dev_speakers if by_speaker[s] == "test"}
    trained = {s for s in dev_speakers if by_speaker[s] in ("train", "validation")}
    assert len(dev_speakers) == 14
    assert len(test_speakers) == 7  # shared_subset_test_fraction 0.5
    assert test_speakers | trained == dev_speakers
    assert not test_speakers & trained
    # train-clean-100 is only a training subset: its speakers never test.
    for speaker in (19, 26, 27):
        assert by_speaker[speaker] in ("train", "validation")
    # validation_fraction 0.1 of the 10 training speakers: one whole speaker.
    assert splits[splits.split == "validation"].speaker_id.nunique() == 1


def test_test_subsets_alone_split_for_evaluation_and_training_refuses_them(
    conf_manifest: pd.DataFrame,
) -> None:
    from asr_pipeline.pipelines.feature_engineering.nodes import assign_feature_keys
    from asr_pipeline.pipelines.training.units_nodes import build_output_units

    splits = split_by_speaker(conf_manifest, shared_params(train_subsets=[]))
    assert set(splits.split) == {"test"} and set(splits.subset) == {"dev-clean"}
    assert splits.speaker_id.nunique() == 14  # every dev-clean speaker is a test speaker
    with pytest.raises(ValueError, match="feature_engineering: the training split is empty"):
        assign_feature_keys(splits, project_params("feature_engineering")["features"])
    with pytest.raises(ValueError, match="training .output units.: the training split is empty"):
        build_output_units(
            splits,
            pd.DataFrame(),
            project_params("units")["units"],
            project_params("training")["training"],
        )


def test_split_is_deterministic_and_seeded(conf_manifest: pd.DataFrame) -> None:
    first = split_by_speaker(conf_manifest, shared_params())
    second = split_by_speaker(conf_manifest, shared_params())
    pd.testing.assert_frame_equal(first, second)
    reference = speaker_splits(first)
    others = [
        speaker_splits(split_by_speaker(conf_manifest, shared_params(split_seed=seed)))
        for seed in (1, 2, 3, 4)
    ]
    assert any(other != reference for other in others)
    for other in others:
        assert set(other) == set(reference)
        assert sum(v == "test" for v in other.values()) == 7


def test_speaker_in_a_test_only_subset_never_trains(shared_manifest: tuple) -> None:
    """dev-clean-2 is test only: its speakers (also in dev-clean) are test everywhere."""
    _, manifest, _ = shared_manifest
    splits = split_by_speaker(manifest, shared_params(test_subsets=["dev-clean", "dev-clean-2"]))
    by_speaker = speaker_splits(splits)
    for speaker in (1988, 2412, 3752):
        assert by_speaker[speaker] == "test"
    assert set(splits.loc[splits.subset == "dev-clean-2", "split"]) == {"test"}
    check_speaker_disjoint(splits)


def test_max_utterances_per_speaker(conf_manifest: pd.DataFrame) -> None:
    splits = split_by_speaker(conf_manifest, shared_params(max_utterances_per_speaker=3))
    per_speaker = splits.groupby("speaker_id").size()
    assert len(per_speaker) == 17  # 3 + 14 speakers, all kept
    assert (per_speaker == 3).all()
    assert set(splits.split) == {"train", "validation", "test"}
    full = speaker_splits(split_by_speaker(conf_manifest, shared_params()))
    assert speaker_splits(splits) == full  # limiting rows does not move speakers


def test_check_speaker_disjoint_raises_on_shared_speaker() -> None:
    frame = pd.DataFrame(
        {
            "speaker_id": [1, 1, 2, 3, 3],
            "split": ["train", "test", "validation", "test", "test"],
        }
    )
    with pytest.raises(ValueError, match=r"speakers \[1\] appear in more than one split"):
        check_speaker_disjoint(frame)
    check_speaker_disjoint(frame.drop(index=1))


# 3. Bad input -----------------------------------------------------------------------------------


@pytest.fixture
def bad_root(tmp_path: Path, librispeech_root: Path) -> Path:
    """A copy of speaker 19's first chapter and of dev-clean-2, with every kind of bad input."""
    root = tmp_path / "LibriSpeech"
    subset, speaker, chapter = CHAPTER
    source = librispeech_root / subset / speaker / chapter
    folder = root / subset / speaker / chapter
    copy_tree(source, folder)
    copy_tree(librispeech_root / "dev-clean-2", root / "dev-clean-2")
    trans_file = folder / f"{speaker}-{chapter}.trans.txt"
    lines = trans_file.read_text().splitlines()
    transcripts = dict(line.split(" ", 1) for line in lines)

    # truncated: the first 20000 bytes of a real file
    (folder / "19-198-0001.flac").write_bytes((source / "19-198-0001.flac").read_bytes()[:20000])
    # empty audio with a transcript line
    (folder / "19-198-9001.flac").write_bytes(b"")
    lines.append("19-198-9001 AN EMPTY FILE")
    # a transcript line without audio
    lines.append("19-198-9002 NOBODY RECORDED THIS")
    # a stereo 44.1 kHz WAV of real audio
    samples, rate = sf.read(source / "19-198-0002.flac", dtype="float32")
    resampled = AF.resample(torch.from_numpy(samples), rate, 44100).numpy()
    sf.write(folder / "19-198-9003.wav", np.stack([resampled, 0.5 * resampled], axis=1), 44100)
    lines.append(f"19-198-9003 {transcripts['19-198-0002']}")
    # digits and punctuation in a transcript
    lines = [
        line.replace("19-198-0003 ", "19-198-0003 42 DOGS! ", 1)
        if line.startswith("19-198-0003 ")
        else line
        for line in lines
    ]
    # audio without a transcript line
    shutil.copyfile(source / "19-198-0004.flac", folder / "19-198-9004.flac")
    trans_file.write_text("\n".join(lines) + "\n")
    return root


BAD_PARAMS = {"train_subsets": ["train-clean-100"], "test_subsets": ["dev-clean-2"]}
EXPECTED_ISSUES = {
    ("19-198-0001", "truncated_audio", "error"),
    ("19-198-9001", "empty_audio", "error"),
    ("19-198-9002", "missing_audio", "error"),
    ("19-198-9003", "sample_rate", "warning"),
    ("19-198-9003", "multi_channel", "warning"),
    ("19-198-0003", "oov_characters", "warning"),
    ("19-198-9004", "missing_transcript", "error"),
}
EXCLUDED = {"19-198-0001", "19-198-9001", "19-198-9002", "19-198-9004"}


def test_bad_input_is_reported_and_excluded(bad_root: Path, librispeech_root: Path) -> None:
    params = shared_params(**BAD_PARAMS)
    inventory = scan_librispeech(str(bad_root), params)
    manifest, report = validate_utterances(inventory, params)

    assert list(report.columns) == QUALITY_COLUMNS
    assert pairs(report) == EXPECTED_ISSUES, report.to_string()
    assert set(report.subset) == {"train-clean-100"}
    by_issue = report.set_index("issue")
    assert "truncat" in by_issue.loc["truncated_audio", "detail"]
    assert "0 bytes" in by_issue.loc["empty_audio", "detail"]
    assert pd.isna(by_issue.loc["missing_audio", "path"])
    assert by_issue.loc["missing_transcript", "path"].endswith("19-198-9004.flac")
    assert "44100" in by_issue.loc["sample_rate", "detail"]
    assert "2 channels" in by_issue.loc["multi_channel", "detail"]
    assert set(by_issue.loc["oov_characters", "detail"].removeprefix("dropped ")) == set("42!")

    # Every good file is still there, the warnings are kept and the errors are not.
    chapter_dir = librispeech_root.joinpath(*CHAPTER)
    good = {p.stem for p in chapter_dir.glob("*.flac")} - EXCLUDED
    assert len(good) == 37
    dev_clean_2 = {p.stem for p in (librispeech_root / "dev-clean-2").rglob("*.flac")}
    assert set(manifest.utterance_id) == good | dev_clean_2 | {"19-198-9003"}
    assert not EXCLUDED & set(manifest.utterance_id)
    assert len(manifest) == 37 + 10 + 1
    # The manifest points into the temporary copy, never at the shared sample.
    assert all(Path(p).is_relative_to(bad_root.resolve()) for p in manifest.path)

    rows = manifest.set_index("utterance_id")
    stereo = rows.loc["19-198-9003"]
    assert (stereo.sample_rate, stereo.channels, stereo.format) == (44100, 2, "WAV")
    original = rows.loc["19-198-0002"]
    assert stereo.duration_s == pytest.approx(original.duration_s, abs=1e-3)
    assert stereo.text == original.text
    oov = rows.loc["19-198-0003"]
    assert oov.transcript.startswith("42 DOGS! ")
    assert oov.text.startswith("dogs ")
    assert set(oov.text) <= set(CHARACTERS)
    assert set(oov.oov_characters) == set("42!")

    # Splitting still works on what is left.
    splits = split_by_speaker(manifest, params)
    assert set(splits.loc[splits.subset == "dev-clean-2", "split"]) == {"test"}
    assert set(splits.loc[splits.subset == "train-clean-100", "split"]) == {"train"}


def test_strict_mode_raises(bad_root: Path) -> None:
    params = shared_params(**BAD_PARAMS, strict=True)
    inventory = scan_librispeech(str(bad_root), params)
    with pytest.raises(ValueError, match=r"strict mode: 7 data-quality issue\(s\)") as error:
        validate_utterances(inventory, params)
    assert "data_quality_report" in str(error.value)
    assert "strict: false" in str(error.value)


def test_strict_mode_passes_clean_data(tmp_path: Path, librispeech_root: Path) -> None:
    copy_tree(librispeech_root / "dev-clean-2", tmp_path / "dev-clean-2")
    params = shared_params(train_subsets=["dev-clean-2"], test_subsets=[], strict=True)
    manifest, report = validate_utterances(scan_librispeech(str(tmp_path), params), params)
    assert len(manifest) == 10
    assert report.empty


def test_only_bad_files_raise(tmp_path: Path, librispeech_root: Path) -> None:
    source = librispeech_root.joinpath(*CHAPTER)
    folder = tmp_path.joinpath(*CHAPTER)
    folder.mkdir(parents=True)
    (folder / "19-198-0000.flac").write_bytes(b"")
    (folder / "19-198-0001.flac").write_bytes((source / "19-198-0001.flac").read_bytes()[:20000])
    (folder / "19-198.trans.txt").write_text(
        "19-198-0000 EMPTY\n19-198-0001 TRUNCATED\n19-198-0002 MISSING\n"
    )
    params = shared_params(train_subsets=["train-clean-100"], test_subsets=[])
    inventory = scan_librispeech(str(tmp_path), params)
    assert len(inventory) == 3
    with pytest.raises(ValueError, match=r"no usable utterance among 3 scanned \(3 excluded\)"):
        validate_utterances(inventory, params)


def test_audio_problems_are_issue_codes(tmp_path: Path, librispeech_root: Path) -> None:
    """The scan says what is wrong with a file as a code, and the report's issue is that code:
    no words of the message (or of the path, which the message quotes) are interpreted."""
    # a root whose name holds the words a classification by substring would have matched
    root = tmp_path / "empty-or-truncated" / "LibriSpeech"
    source = librispeech_root.joinpath(*CHAPTER)
    folder = root.joinpath(*CHAPTER)
    folder.mkdir(parents=True)
    (folder / "19-198-0000.flac").write_bytes(np.random.default_rng(0).bytes(30000))
    (folder / "19-198-0001.flac").write_bytes(b"")
    shutil.copyfile(source / "19-198-0002.flac", folder / "19-198-0002.flac")
    (folder / "19-198.trans.txt").write_text(
        "19-198-0000 GARBAGE\n19-198-0001 EMPTY\n19-198-0002 FINE\n"
    )
    assert check_audio(folder / "19-198-0000.flac")[1] is AudioIssue.UNREADABLE
    assert check_audio(folder / "19-198-0001.flac")[1:] == (
        AudioIssue.EMPTY,
        "empty file (0 bytes)",
    )
    info, issue, detail = check_audio(folder / "19-198-0002.flac")
    assert info is not None and issue is None and detail == ""

    params = shared_params(train_subsets=["train-clean-100"], test_subsets=[])
    inventory = scan_librispeech(str(root), params)
    assert dict(zip(inventory.utterance_id, inventory.audio_issue, strict=True)) == {
        "19-198-0000": "unreadable_audio",
        "19-198-0001": "empty_audio",
        "19-198-0002": "",
    }
    manifest, report = validate_utterances(inventory, params)
    assert pairs(report) == {
        ("19-198-0000", "unreadable_audio", "error"),
        ("19-198-0001", "empty_audio", "error"),
    }
    assert "unreadable audio" in report.set_index("issue").loc["unreadable_audio", "detail"]
    assert manifest.utterance_id.tolist() == ["19-198-0002"]


def test_missing_subset_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train-clean-100"):
        scan_librispeech(str(tmp_path), shared_params())


# 4. Pipeline registry ---------------------------------------------------------------------------


def test_pipeline_registry_loads() -> None:
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    assert set(pipelines) >= {
        "data_engineering",
        "feature_engineering",
        "training",
        "evaluation",
        "inference",
        "__default__",
    }
    owner: dict[str, str] = {}
    duplicates = []
    for name, pipeline in pipelines.items():
        if name == "__default__":
            continue
        for node in pipeline.nodes:
            if node.name in owner and owner[node.name] != name:
                duplicates.append((node.name, owner[node.name], name))
            owner.setdefault(node.name, name)
    assert not duplicates
    data_engineering = {node.name for node in pipelines["data_engineering"].nodes}
    assert data_engineering == {
        "prepare_librispeech",
        "scan_librispeech",
        "validate_utterances",
        "split_by_speaker",
    }
    default = {node.name for node in pipelines["__default__"].nodes}
    assert data_engineering <= default
    assert not {node.name for node in pipelines["inference"].nodes} & default


def test_pipeline_registry_loads_one_requested_pipeline() -> None:
    """What `kedro run --pipelines data_engineering` does: only that pipeline is loaded."""
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    pipelines.set_requested(["data_engineering"])
    try:
        names = {node.name for node in pipelines["data_engineering"].nodes}
    finally:
        pipelines.set_requested(None)
    assert "split_by_speaker" in names


# 5. The CLI -------------------------------------------------------------------------------------


CLI_SELECTION = ["--pipelines", "data_engineering"]


def test_kedro_run_data_engineering_cli(kedro_project: Path, librispeech_root: Path) -> None:
    kedro = Path(sys.executable).parent / "kedro"
    env = {
        **os.environ,
        "LIBRISPEECH_DIR": str(librispeech_root),
        "KEDRO_DISABLE_TELEMETRY": "1",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [
            str(kedro),
            "run",
            *CLI_SELECTION,
            "--env",
            "shared",
            "--params",
            "data_engineering.max_utterances_per_speaker=5",
        ],
        cwd=kedro_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = kedro_project / "data"
    manifest = pd.read_parquet(data / "02_intermediate" / "manifest.parquet")
    splits = pd.read_parquet(data / "03_primary" / "manifest_splits.parquet")
    report = pd.read_csv(data / "08_reporting" / "data_quality_report.csv")
    assert manifest.groupby("subset").size().to_dict() == {"train-clean-100": 367, "dev-clean": 868}
    assert list(report.columns) == QUALITY_COLUMNS
    assert report.empty
    assert (splits.groupby("speaker_id").size() == 5).all()
    assert splits.speaker_id.nunique() == 17
    assert set(splits.split) == {"train", "validation", "test"}
    assert (splits.groupby("speaker_id").split.nunique() == 1).all()
    assert all(Path(p).is_relative_to(librispeech_root.resolve()) for p in splits.path)


# 6. Missing data without download ---------------------------------------------------------------


def test_prepare_librispeech_without_download_raises(
    tmp_path: Path, librispeech_root: Path
) -> None:
    copy_tree(librispeech_root / "dev-clean-2", tmp_path / "dev-clean-2")
    librispeech = {
        "root": str(tmp_path),
        "download": False,
        "base_url": "https://www.openslr.org/resources",
    }
    params = shared_params(train_subsets=["train-clean-100"], test_subsets=["dev-clean-2"])
    with pytest.raises(DownloadError, match="LIBRISPEECH_DIR") as error:
        prepare_librispeech(librispeech, params)
    message = str(error.value)
    assert "train-clean-100" in message
    assert "dev-clean-2" not in message  # present, so not reported missing
    assert str(tmp_path.resolve() / "train-clean-100") in message
    assert not (tmp_path / "train-clean-100").exists()


def test_prepare_librispeech_with_data_present(librispeech_root: Path) -> None:
    librispeech = {"root": str(librispeech_root), "download": False, "base_url": "unused"}
    assert prepare_librispeech(librispeech, shared_params()) == str(librispeech_root.resolve())
